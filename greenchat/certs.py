"""Self-signed certificates: for `greenchat-admin mkcert` and for the
certificate each TLS client makes for its private links.

Strategy
- The standard library cannot create certificates; the `cryptography`
  package can, in-process and in about a millisecond for an EC P-256 key
  (`openssl` as a subprocess would work too, but is not on every machine and
  costs a process per client start).
- A server certificate names its hosts as subjectAltNames (DNS names and IP
  addresses), since that is all a TLS client checks.
- A private-link certificate is never checked against a CA: the peer knows its
  SHA-256 fingerprint from the server, over the server's TLS link, together
  with the one-time token. `fingerprint()` is that pin.

`expiry_warnings()` is the server's start-up look at its certificate: one
that has expired or expires within EXPIRY_WARNING is worth a line in the log.

No sockets here; files only where asked.
"""

import datetime
import hashlib
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
EXPIRY_WARNING = datetime.timedelta(days=14)


def make_pair(common_name, names=DEFAULT_NAMES, days=365):
    """Return (certificate PEM, private key PEM) for a new self-signed pair.

    `names` become subjectAltNames: IP addresses as such, the rest as DNS names.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               # A little slack for clocks that disagree.
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem


def fingerprint(der):
    """The pin of a DER certificate: its SHA-256 digest, lower-case hex."""
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(cert_pem):
    return fingerprint(ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii")))


def write_pair(cert_pem, key_pem, cert_path, key_path):
    """Write the pair as new files: the certificate 0644, the key 0600.

    Raises FileExistsError if either path exists, as a file or as a symlink
    (even a dangling one); nothing is left behind then.
    """
    _write_new(cert_path, cert_pem, 0o644)
    try:
        _write_new(key_path, key_pem, 0o600)
    except BaseException:
        os.unlink(cert_path)
        raise


def _write_new(path, data, mode):
    # O_EXCL: never overwrite or follow a link planted at the path.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)         # exactly, whatever the umask
            f.write(data)
    except BaseException:
        os.unlink(path)
        raise


def expiry_warnings(cert_path, now=None):
    """Warnings (strings) if the first certificate in `cert_path` has expired
    or expires within EXPIRY_WARNING of `now` (default: the current time)."""
    try:
        with open(cert_path, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return []                               # unusable: server_context says so
    now = now or datetime.datetime.now(datetime.timezone.utc)
    end = certificate.not_valid_after_utc
    date = end.strftime("%Y-%m-%d %H:%M UTC")
    if end <= now:
        return [f"TLS certificate {cert_path} expired on {date}"]
    if end - now <= EXPIRY_WARNING:
        return [f"TLS certificate {cert_path} expires on {date}, within "
                f"{EXPIRY_WARNING.days} days"]
    return []
