"""TLS for the server link and for private links: contexts and handshakes.

Strategy
- Every context is a `gevent.ssl.SSLContext` (greenchat does not
  monkey-patch), so wrapped sockets wait on the hub, never block it. Note that
  `gevent.ssl.create_default_context` returns the standard library's class;
  contexts are therefore built here by hand. TLS 1.2 is the minimum.
- A handshake never runs in the accept loop and always under a deadline: the
  socket is wrapped with `do_handshake_on_connect=False` and `do_handshake()`
  runs under a gevent.Timeout in the connection's own greenlet, so a client
  that connects and says nothing costs that greenlet and nobody else.
- Plain text against a TLS port: a TLS connection's first byte is 0x16 (a
  handshake record). `accept` peeks at it; anything else gets one plain-text
  frame the client can show, then the connection closes. (The other mistake, a
  TLS client on a plain port, meets the codec's immediate refusal of a frame
  that does not start with "{"; the client explains its failed handshake.)
- Private links: with TLS on the server link, each client makes a certificate
  for its session (certs.py) and its listener serves it. The server passes
  its SHA-256 fingerprint to the requester together with the one-time token;
  the requester checks no CA but compares that pin after the handshake. The
  token, sent only inside that channel, authenticates the requester.
"""

import os
import shutil
import ssl
import tempfile

import gevent
from gevent import socket
from gevent import ssl as gssl

from greenchat import certs
from greenchat.errors import ConfigError, TLSError

HANDSHAKE_RECORD = 0x16


def _context(protocol):
    """A gevent context for `protocol`, TLS 1.2 at the least."""
    context = gssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_context(cert_file, key_file):
    """A server context for the certificate chain in `cert_file`; ConfigError if unusable."""
    context = _context(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert_file} and key {key_file}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    return context


def client_context(ca_file=None, insecure=False):
    """A client context: verifies the server against `ca_file` (or the system's
    CAs) and its host name, unless `insecure`."""
    context = _context(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA certificates from {ca_file}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    return context


def session_identity(user_hint="greenchat-peer"):
    """A fresh self-signed identity for this session's private links.

    Returns (server context serving it, its fingerprint). The key exists on
    disk only for the moment `load_cert_chain` needs a file, in a directory
    only this user can read.
    """
    cert_pem, key_pem = certs.make_pair(user_hint, names=())
    context = _context(ssl.PROTOCOL_TLS_SERVER)
    directory = tempfile.mkdtemp(prefix="greenchat-")
    try:
        cert_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        certs.write_pair(cert_pem, key_pem, cert_path, key_path)
        context.load_cert_chain(cert_path, key_path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return context, certs.pem_fingerprint(cert_pem)


def pinned_context():
    """A client context for a private link: no CA, the pin is checked after."""
    context = _context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def accept(sock, context, timeout, plain_refusal=None):
    """Run the server side of a handshake on `sock`; return the TLS socket.

    Raises TLSError (after sending `plain_refusal`, bytes, to a client that
    spoke plain text) if the handshake fails or takes over `timeout` seconds.
    """
    with gevent.Timeout(timeout, TLSError("TLS handshake timed out")):
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError as exc:
            raise TLSError(f"connection failed before the handshake: {exc}") from None
        if not first:
            raise TLSError("connection closed before the handshake")
        if first[0] != HANDSHAKE_RECORD:
            if plain_refusal:
                try:
                    sock.sendall(plain_refusal)
                except OSError:
                    pass
            raise TLSError("the client spoke plain text to the TLS port")
        tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            tls_sock.do_handshake()
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(f"TLS handshake failed: {describe(exc)}") from None
    return tls_sock


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and _IP_ADDRESS_MISMATCH: a good
# certificate, for another name.
NAME_MISMATCH = (62, 64)


def connect(sock, context, timeout, server_hostname=None, pin=None):
    """Run the client side of a handshake on the connected `sock`.

    With `pin`, the peer's certificate must have that fingerprint. Raises
    TLSError; its `verify` attribute is True when the certificate was refused.
    """
    tls_sock = context.wrap_socket(sock, server_hostname=server_hostname,
                                   do_handshake_on_connect=False)
    with gevent.Timeout(timeout, TLSError("TLS handshake timed out")):
        try:
            tls_sock.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(exc.verify_message or describe(exc), verify=True,
                           wrong_name=exc.verify_code in NAME_MISMATCH) from None
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(describe(exc)) from None
    if pin is not None:
        der = tls_sock.getpeercert(binary_form=True)
        if der is None or certs.fingerprint(der) != pin:
            raise TLSError("the peer's certificate is not the one the server named", verify=True)
    return tls_sock


def describe(exc):
    """A short, readable reason for an SSL or socket error."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
