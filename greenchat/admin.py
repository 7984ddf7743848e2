"""greenchat-admin: manage the accounts file.

    greenchat-admin [--credentials FILE] adduser NAME [--password-stdin]
    greenchat-admin [--credentials FILE] passwd NAME [--password-stdin]
    greenchat-admin [--credentials FILE] deluser NAME
    greenchat-admin [--credentials FILE] list
    greenchat-admin [--credentials FILE] upgrade
    greenchat-admin mkcert [--cert FILE] [--key FILE] [--name HOST ...] [--days N]

Passwords are prompted for without echo (twice, to catch typos), or read as
one line from standard input with --password-stdin, and stored as scrypt
hashes. `adduser` gives each account a fresh random id (the optional third
field, see credentials.py); `passwd` and `upgrade` keep a line's id as it was
and never add one. `upgrade` hashes every plain-text entry in place. The file
is rewritten atomically (a temporary file in the same directory, fsync,
rename, fsync of the directory), keeping comments, blank lines, order and
owner; every rewrite (and `upgrade`, even with nothing to hash) leaves it mode
0600, whatever its mode was and whatever the umask. A running server reads it
at start.

Every edit is one read-modify-write under an exclusive flock on
`<credentials>.lock` beside the file (not on the file itself, which each
rewrite replaces), so concurrent admins queue instead of losing each other's
edits. Prompting and hashing happen before the lock is taken; the file is
read again under it.

`mkcert` writes a self-signed certificate and key for `greenchat-server
--tls-cert/--tls-key`; clients trust it with `--tls --ca CERT`. It names
localhost, 127.0.0.1 and ::1 unless --name is given. It creates both files
new (the certificate 0644, the key 0600, whatever the umask) and refuses a
path that exists, even as a symlink, so it never overwrites or writes
through a link.
"""

import argparse
import contextlib
import fcntl
import getpass
import os
import secrets
import sys
import tempfile
import unicodedata

from greenchat import __version__, config, passwords
from greenchat.credentials import Credentials, account_fields
from greenchat.errors import GreenchatError


class AdminError(GreenchatError):
    """A request the accounts file cannot satisfy."""


@contextlib.contextmanager
def locked(path):
    """Hold the exclusive lock that serializes edits of the file at `path`."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)            # exactly, whatever the umask
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                    # releases the lock


def read_lines(path):
    Credentials.load(path)          # refuse to edit a file the server would reject
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def write_lines(path, lines):
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=".credentials-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)        # whatever the old mode and the umask
            _keep_owner(f.fileno(), path)
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        _fsync_directory(directory)             # the rename itself survives a crash
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def _keep_owner(fd, path):
    """Give the new file the old one's owner: a server running as its own user
    must still read a 0600 file that root (sudo) rewrote."""
    try:
        old = os.stat(path)
    except FileNotFoundError:
        return
    if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.fchown(fd, old.st_uid, old.st_gid)
        except PermissionError:
            pass                                # only root may give a file away


def _fsync_directory(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def entry_fields(line):
    """[name, secret] or [name, secret, id] for an account line, else None
    (read_lines has checked the file as the server reads it)."""
    fields = account_fields(line)
    if fields is None:
        return None
    return list(fields) if fields[2] is not None else list(fields[:2])


def entry_line(name, secret, *account_id):
    """An account line; the id, if given, as the third field."""
    return " ".join((name, secret, *account_id))


def entry_index(lines, name):
    for index, line in enumerate(lines):
        fields = entry_fields(line)
        if fields and fields[0] == name:
            return index
    return None


# Control, format (zero-width, bidi overrides), surrogate and separator
# characters: a name must look like what it is wherever it is shown.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def valid_name(name):
    if not name or name.startswith("#") or any(
            c.isspace() or unicodedata.category(c) in UNSAFE_CATEGORIES for c in name):
        raise AdminError(f"not a valid user name: {name!r}")
    return name


def ask_password(from_stdin):
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            raise AdminError("the passwords differ")
    if not password:
        raise AdminError("the password is empty")
    return password


def _absent(lines, name):
    if entry_index(lines, name) is not None:
        raise AdminError(f"user {name} exists already")


def _index(lines, name):
    index = entry_index(lines, name)
    if index is None:
        raise AdminError(f"no user {name}")
    return index


def adduser(path, name, from_stdin):
    valid_name(name)
    # Checked before the prompt to fail fast, and again under the lock.
    _absent(read_lines(path) if os.path.exists(path) else [], name)
    secret = passwords.hash_password(ask_password(from_stdin))
    with locked(path):
        lines = read_lines(path) if os.path.exists(path) else []
        _absent(lines, name)
        lines.append(entry_line(name, secret, secrets.token_hex(8)))
        write_lines(path, lines)
    return f"added {name}"


def passwd(path, name, from_stdin):
    _index(read_lines(path), name)
    secret = passwords.hash_password(ask_password(from_stdin))
    with locked(path):
        lines = read_lines(path)
        index = _index(lines, name)
        lines[index] = entry_line(name, secret, *entry_fields(lines[index])[2:])
        write_lines(path, lines)
    return f"password of {name} changed"


def deluser(path, name):
    _index(read_lines(path), name)      # no lock file beside a missing file
    with locked(path):
        lines = read_lines(path)
        del lines[_index(lines, name)]
        write_lines(path, lines)
    return f"deleted {name}"


def list_users(path):
    lines = read_lines(path)
    rows = []
    for line in lines:
        fields = entry_fields(line)
        if fields:
            state = "hashed" if passwords.is_hashed(fields[1]) else "plain text"
            rows.append(f"{fields[0]}\t{state}")
    return "\n".join(rows) if rows else "no users"


def upgrade(path):
    read_lines(path)                    # no lock file beside a missing file
    with locked(path):
        lines = read_lines(path)
        count = 0
        for index, line in enumerate(lines):
            fields = entry_fields(line)
            if fields and not passwords.is_hashed(fields[1]):
                name, secret, *account_id = fields
                lines[index] = entry_line(name, passwords.hash_password(secret), *account_id)
                count += 1
        loose = os.stat(path).st_mode & 0o777 != 0o600
        if count or loose:
            write_lines(path, lines)
    return f"hashed {count} plain-text password(s)" + (", file mode set to 0600" if loose else "")


def mkcert(cert_path, key_path, names, days):
    from greenchat import certs

    for path in (cert_path, key_path):
        if os.path.lexists(path):               # a dangling symlink too
            raise AdminError(f"{path} exists; not overwriting it")
    cert_pem, key_pem = certs.make_pair(names[0], names, days)
    try:
        certs.write_pair(cert_pem, key_pem, cert_path, key_path)
    except FileExistsError as exc:              # appeared since the look above
        raise AdminError(f"{exc.filename} exists; not overwriting it") from None
    return (f"wrote {cert_path} and {key_path} (for {', '.join(names)}, {days} days)\n"
            f"SHA-256 fingerprint {certs.pem_fingerprint(cert_pem)}")


def _days(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 36500:
        raise argparse.ArgumentTypeError(f"days must be 1-36500, got {text!r}")
    return value


def parser():
    p = argparse.ArgumentParser(prog="greenchat-admin", description="Manage greenchat accounts.")
    config.add_argument(p, config.ServerConfig, "credentials")     # the server's, exactly
    p.add_argument("--version", action="version", version=f"greenchat-admin {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in (("adduser", "add a user"), ("passwd", "change a user's password")):
        c = sub.add_parser(name, help=summary)
        c.add_argument("name", metavar="NAME")
        c.add_argument("--password-stdin", action="store_true",
                       help="read the password as one line from standard input")
    sub.add_parser("deluser", help="delete a user").add_argument("name", metavar="NAME")
    sub.add_parser("list", help="list the users")
    sub.add_parser("upgrade", help="hash every plain-text password in place")
    c = sub.add_parser("mkcert", help="write a self-signed TLS certificate and key")
    c.add_argument("--cert", default="greenchat-cert.pem", metavar="FILE",
                   help="certificate file to write (default: %(default)s)")
    c.add_argument("--key", default="greenchat-key.pem", metavar="FILE",
                   help="private key file to write, mode 0600 (default: %(default)s)")
    c.add_argument("--name", action="append", metavar="HOST", dest="names",
                   help="a host name or IP address clients use to reach the server; "
                        "repeatable (default: localhost, 127.0.0.1, ::1)")
    c.add_argument("--days", type=_days, default=365, help="validity (default: %(default)s)")
    return p


def main(argv=None):
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if a.command == "adduser":
            out = adduser(a.credentials, a.name, a.password_stdin)
        elif a.command == "passwd":
            out = passwd(a.credentials, a.name, a.password_stdin)
        elif a.command == "deluser":
            out = deluser(a.credentials, a.name)
        elif a.command == "list":
            out = list_users(a.credentials)
        elif a.command == "mkcert":
            from greenchat.certs import DEFAULT_NAMES
            out = mkcert(a.cert, a.key, a.names or list(DEFAULT_NAMES), a.days)
        else:
            out = upgrade(a.credentials)
    except (GreenchatError, OSError, KeyboardInterrupt, EOFError) as exc:
        print(f"greenchat-admin: {exc or 'interrupted'}", file=sys.stderr)
        return 1
    print(out)
    return 0


def run():
    sys.exit(main())
