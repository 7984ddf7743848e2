"""The accounts file: one `username secret` per line.

Blank lines and lines starting with `#` are skipped; any other line must have
exactly two whitespace-separated fields, else the file is rejected with the
line number, so a typo never silently locks someone out. A secret is a plain
password or a scrypt hash (see passwords.py); both are compared in constant
time. `greenchat-admin` writes this file.
"""

from greenchat import passwords
from greenchat.errors import CredentialsError


class Credentials:
    def __init__(self, accounts):
        self._accounts = dict(accounts)

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise CredentialsError(f"cannot read credentials file {path}: {reason}") from None
        accounts = {}
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fields = stripped.split()
            if len(fields) != 2:
                raise CredentialsError(
                    f"{path}:{number}: expected `username password`, got {len(fields)} field(s)")
            name, password = fields
            if name in accounts:
                raise CredentialsError(f"{path}:{number}: duplicate username {name!r}")
            accounts[name] = password
        return cls(accounts)

    def __contains__(self, name):
        return name in self._accounts

    def __len__(self):
        return len(self._accounts)

    @property
    def usernames(self):
        return frozenset(self._accounts)

    def is_hashed(self, name):
        """True if checking `name`'s password costs a hash (run it off the hub)."""
        return passwords.is_hashed(self._accounts.get(name, ""))

    def check(self, name, password):
        """True if `password` is `name`'s; constant time in the password."""
        stored = self._accounts.get(name)
        if stored is None:
            return False
        return passwords.verify(stored, password)
