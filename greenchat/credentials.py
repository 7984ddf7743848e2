"""The accounts file: one `username secret [account-id]` per line.

Blank lines and lines starting with `#` are skipped; any other line must have
two or three whitespace-separated fields, else the file is rejected with the
line number, so a typo never silently locks someone out. A secret is a plain
password or a scrypt hash (see passwords.py); both are compared in constant
time. `greenchat-admin` writes this file.

The optional account id (1-64 of `A-Z a-z 0-9 _ -`) tells two accounts that
share a name apart: `greenchat-admin adduser` gives every account a fresh one,
so a name deleted and added again is a different account even when both
edits fall between two loads. Hand-written lines may omit it (id None).
`changes()` compares two loads, sans-IO, for a server that reloads the file.

`file_warnings()` lists what a careless admin should hear about at start: a
file others may read or write, plain-text passwords, no account at all.
"""

import os
import re
from dataclasses import dataclass

from greenchat import passwords
from greenchat.errors import CredentialsError

ACCOUNT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Changes:
    """Names whose account differs between two loads (frozensets)."""
    added: frozenset
    removed: frozenset
    replaced: frozenset             # same name, another account: both ids set and unequal
    password_changed: frozenset     # same account, another secret


class Credentials:
    def __init__(self, accounts, ids=None):
        self._accounts = dict(accounts)
        self._ids = dict(ids or {})

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise CredentialsError(f"cannot read credentials file {path}: {reason}") from None
        accounts, ids = {}, {}
        for number, line in enumerate(lines, 1):
            try:
                fields = account_fields(line)
            except ValueError as exc:
                raise CredentialsError(f"{path}:{number}: {exc}") from None
            if fields is None:
                continue
            name, password, account_id = fields
            if name in accounts:
                raise CredentialsError(f"{path}:{number}: duplicate username {name!r}")
            if account_id is not None:
                ids[name] = account_id
            accounts[name] = password
        return cls(accounts, ids)

    def __contains__(self, name):
        return name in self._accounts

    def __len__(self):
        return len(self._accounts)

    @property
    def usernames(self):
        return frozenset(self._accounts)

    def account_id(self, name):
        """`name`'s account id, or None (no such user, or a line without one)."""
        return self._ids.get(name)

    def changes(self, new):
        """What `new`, a later load, changes against this one."""
        old_names, new_names = self.usernames, new.usernames
        replaced, password_changed = set(), set()
        for name in old_names & new_names:
            old_id, new_id = self.account_id(name), new.account_id(name)
            if old_id is not None and new_id is not None and old_id != new_id:
                replaced.add(name)
            elif self._accounts[name] != new._accounts[name]:
                password_changed.add(name)
        return Changes(added=new_names - old_names, removed=old_names - new_names,
                       replaced=frozenset(replaced),
                       password_changed=frozenset(password_changed))

    def is_hashed(self, name):
        """True if checking `name`'s password costs a hash (run it off the hub)."""
        return passwords.is_hashed(self._accounts.get(name, ""))

    def check(self, name, password):
        """True if `password` is `name`'s; constant time in the password."""
        stored = self._accounts.get(name)
        if stored is None:
            return False
        return passwords.verify(stored, password)


def account_fields(line):
    """(name, secret, account id or None) of one line of the file; None for
    a blank line or a comment. ValueError, saying why, for anything else."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    if len(fields) not in (2, 3):
        raise ValueError(f"expected `username password [account-id]`, got {len(fields)} field(s)")
    if len(fields) == 3 and not ACCOUNT_ID.fullmatch(fields[2]):
        raise ValueError(f"account id {fields[2]!r} is not 1-64 of A-Z a-z 0-9 _ -")
    return fields[0], fields[1], fields[2] if len(fields) == 3 else None


def file_warnings(path, credentials):
    """Warnings (strings) about the accounts file at `path`, loaded as `credentials`."""
    warnings = []
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = None                             # gone since the load: nothing to say
    if mode is not None and mode & 0o077:
        warnings.append(f"credentials file {path} is readable or writable by group or others "
                        f"(mode {mode:04o}); run `chmod 600 {path}`")
    plain = sum(not credentials.is_hashed(name) for name in credentials.usernames)
    if plain:
        warnings.append(f"credentials file {path} holds {plain} plain-text password(s); "
                        "run `greenchat-admin upgrade` to hash them")
    if not len(credentials):
        warnings.append(f"credentials file {path} holds no account; nobody can log in")
    return warnings
