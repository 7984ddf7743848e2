"""Password hashing: scrypt from hashlib, a fresh salt per entry.

A hashed entry is one whitespace-free word, so it fits the credentials file's
`username secret` lines: `scrypt$N$r$p$SALT$HASH` with SALT and HASH in
URL-safe base64. Anything else in the secret column is a plain password,
which keeps hand-written files working (`greenchat-admin upgrade` hashes them).

Hashing costs tens of milliseconds of CPU with the default parameters
(docs/design.md): callers in the server run verify() in a thread pool
(hashlib.scrypt releases the GIL), never in the gevent hub. Comparisons are
constant-time.
"""

import base64
import hashlib
import hmac
import os

PREFIX = "scrypt$"
N, R, P, DKLEN = 2 ** 14, 8, 1, 32
MAXMEM = 64 * 1024 * 1024


def _b64(data):
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password, n=N, r=R, p=P):
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                            maxmem=MAXMEM, dklen=DKLEN)
    return f"{PREFIX}{n}${r}${p}${_b64(salt)}${_b64(digest)}"


def is_hashed(secret):
    return secret.startswith(PREFIX)


def verify(secret, password):
    """True if `password` matches `secret`, hashed or plain."""
    given = password.encode("utf-8", "surrogatepass")
    if not is_hashed(secret):
        return hmac.compare_digest(secret.encode("utf-8"), given)
    try:
        _, n, r, p, salt, digest = secret.split("$")
        expected = _unb64(digest)
        # Always DKLEN bytes, never len(expected): a truncated entry must
        # not match on its prefix.
        actual = hashlib.scrypt(given, salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                                maxmem=MAXMEM, dklen=DKLEN)
    except (ValueError, TypeError):
        return False            # a damaged entry matches nothing
    return hmac.compare_digest(actual, expected)
