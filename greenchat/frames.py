"""Every frame greenchat speaks, named once: the one place a frame's type
and members are spelled. No I/O.

docs/protocol.md says what each frame means. The builders return plain dicts
for codec.encode; the readers take a decoded frame (codec.parse guarantees a
dict with a string "type") and return its members checked, raising
MalformedFrame for a member of the wrong type. The server, the client, the
peer links, the tests and the bench all build their frames here.
"""

from greenchat.errors import MalformedFrame

# Sent in the first exchange; a peer speaking another version is refused.
PROTOCOL_VERSION = 1

# Login statuses (docs/protocol.md, "Login statuses"). EXPIRED answers a
# resume the server cannot honour: log in with username and password instead.
ASK_USERNAME, ASK_PASSWORD, LOGGED_IN, FAILED = "username", "password", "ok", "failed"
EXPIRED = "expired"
# Why a session ended (the bye frame's reason).
LOGOUT, IDLE, SHUTDOWN, REMOVED = "logout", "idle", "shutdown", "removed"


# Client to server -------------------------------------------------------------

def hello(client):
    return {"type": "hello", "version": PROTOCOL_VERSION, "client": client}


def username(name):
    return {"type": "username", "username": name}


def password(secret, p2p_host=None, p2p_port=None, fingerprint=None):
    """The password; with `p2p_port`, where this client takes private links.
    The server reads only the port: it names the host itself (the address it
    sees), and `p2p_host` is sent for servers older than that."""
    frame = {"type": "password", "password": secret}
    if p2p_port is not None:
        frame["p2p"] = _p2p(p2p_host, p2p_port, fingerprint)
    return frame


def _p2p(host, port, fingerprint):
    p2p = {"host": host, "port": port}
    if fingerprint is not None:
        p2p["fingerprint"] = fingerprint
    return p2p


def resume(user, token, last, p2p_host=None, p2p_port=None, fingerprint=None):
    """Instead of username and password, after a dropped connection: take
    the session of the login that was given `token` back, having shown every
    message up to id `last`; `p2p` as in password()."""
    frame = {"type": "resume", "user": user, "token": token, "last": last}
    if p2p_port is not None:
        frame["p2p"] = _p2p(p2p_host, p2p_port, fingerprint)
    return frame


def pong():
    return {"type": "pong"}


def names_request():
    """Ask for the account names this user may see (for Tab completion)."""
    return {"type": "names"}


def command(request_id, line, txn=None, retry=False):
    """A typed line. `txn`, the client's transaction id, makes a resent
    command (`retry`, after a reconnect) answered with its first answer
    instead of run again."""
    frame = {"type": "command", "id": request_id, "line": line}
    if txn is not None:
        frame["txn"] = txn
        if retry:
            frame["retry"] = True
    return frame


def ack(upto):
    """Every message with an id up to `upto` has been shown."""
    return {"type": "ack", "upto": upto}


# Server to client -------------------------------------------------------------

def server_hello(server, max_frame=None):
    """The server's answer to hello; `max_frame`, the largest frame it takes
    (bytes, without the newline), is left out when None."""
    frame = {"type": "hello", "version": PROTOCOL_VERSION, "server": server}
    if max_frame is not None:
        frame["max_frame"] = max_frame
    return frame


def login(status, text=None, user=None, token=None, resumed=False, retry_after=None):
    """A login step's outcome; a LOGGED_IN one carries the resume `token`,
    and `resumed` when it took a session back; a lockout, `retry_after`,
    the seconds until the account may log in again."""
    frame = {"type": "login", "status": status}
    if user is not None:
        frame["user"] = user
    if text is not None:
        frame["text"] = text
    if token is not None:
        frame["resume"] = token
    if resumed:
        frame["resumed"] = True
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def ping():
    return {"type": "ping"}


def names(users):
    """The answer to names_request: account names, sorted."""
    return {"type": "names", "users": users}


def reply(request_id, lines=(), ok=True, extra=None):
    """The answer to command `request_id` (`lines` a list or tuple); `extra`,
    a dict of members to add (e.g. "private")."""
    frame = {"type": "reply", "id": request_id, "ok": ok, "lines": lines}
    if extra:
        frame.update(extra)
    return frame


def failure(request_id, text):
    return reply(request_id, [text], ok=False)


def message(sender, text, msg_id=None, sent_at=None, txn=None, broadcast=False,
            offline=False):
    """A message from `sender`: `msg_id`, the server's id for it (increasing
    for each recipient), `sent_at` when the server accepted it, `txn` the
    sender's transaction id; `offline` marks one that was stored."""
    frame = {"type": "message", "id": msg_id, "from": sender, "text": text,
             "sent_at": sent_at}
    if msg_id is None:
        del frame["id"]
    if sent_at is None:
        del frame["sent_at"]
    if txn is not None:
        frame["txn"] = txn
    if broadcast:
        frame["broadcast"] = True
    if offline:
        frame["offline"] = True
    return frame


def history_entry(msg_id, sender, recipient, text, sent_at):
    """One message of a `history` reply's "history" member."""
    return {"id": msg_id, "from": sender, "to": recipient, "text": text, "sent_at": sent_at}


def presence(user, online):
    return {"type": "presence", "user": user, "online": online}


def bye(reason, text):
    return {"type": "bye", "reason": reason, "text": text}


def error(text):
    return {"type": "error", "text": text}


def notice(text):
    """A line for the user from the server itself (the idle warning)."""
    return {"type": "notice", "text": text}


def private_offer(requester, token):
    return {"type": "private_offer", "from": requester, "token": token}


def private_stop(user):
    return {"type": "private_stop", "user": user}


# Peer to peer -----------------------------------------------------------------

def peer_hello(user, token):
    return {"type": "peer_hello", "version": PROTOCOL_VERSION, "user": user, "token": token}


def peer_ok(user):
    return {"type": "peer_ok", "user": user}


def private(text):
    return {"type": "private", "text": text}


def stop():
    return {"type": "stop"}


# Reading ----------------------------------------------------------------------

def speaks_our_version(frame):
    """True if a hello (or peer_hello) names PROTOCOL_VERSION, as an integer:
    JSON's true and 1.0 are not 1."""
    version = frame.get("version")
    return type(version) is int and version == PROTOCOL_VERSION


def string(frame, name):
    """Member `name` of `frame`, which must be a string."""
    value = frame.get(name)
    if not isinstance(value, str):
        raise MalformedFrame(f"{frame['type']!r} frame needs a string {name!r}")
    return value


def optional_string(frame, name):
    """Member `name`: None if absent, MalformedFrame if not a string (for
    frames that must be right: hello, login, bye, error)."""
    value = frame.get(name)
    if value is not None and not isinstance(value, str):
        raise MalformedFrame(f"{frame['type']!r} frame with a {type(value).__name__} {name!r}")
    return value


def string_or_none(frame, name):
    """Member `name` if it is a string, else None: a session's frames are
    taken as far as they make sense."""
    value = frame.get(name)
    return value if isinstance(value, str) else None


def integer_or_none(value):
    """`value` if it is an integer (JSON's true is not), else None."""
    return value if type(value) is int else None


def link_offer(offer):
    """(host, port, token, fingerprint) of the "private" member of a
    startprivate reply; MalformedFrame if one is of the wrong kind, so the
    link fails as unreachable."""
    host, token = string_or_none(offer, "host"), string_or_none(offer, "token")
    port, fingerprint = integer_or_none(offer.get("port")), offer.get("fingerprint")
    if host is None or port is None or not 1 <= port <= 65535 or token is None \
            or not (fingerprint is None or isinstance(fingerprint, str)):
        raise MalformedFrame("the link offer needs a string host and token and a port 1-65535")
    try:
        host.encode("idna")
    except UnicodeError:
        # Refused here: a resolver's thread would print a traceback.
        raise MalformedFrame(f"the link offer names no host: {host!r}") from None
    return host, port, token, fingerprint


# A client's transaction id: any string of at most this many characters.
MAX_TXN = 64


def command_txn(frame):
    """(transaction id or None, retry flag) of a command frame."""
    txn = frame.get("txn")
    if txn is None:
        return None, False
    if not isinstance(txn, str) or not 0 < len(txn) <= MAX_TXN:
        raise MalformedFrame(f"a command's txn must be a string of 1-{MAX_TXN} characters")
    return txn, frame.get("retry") is True


def resume_fields(frame):
    """(user, token, last) of a resume frame."""
    last = frame.get("last")
    if type(last) is not int or last < 0:
        raise MalformedFrame("a resume's last must be a non-negative integer")
    return string(frame, "user"), string(frame, "token"), last


def ack_upto(frame):
    """The id an ack frame acknowledges up to: a non-negative integer."""
    upto = frame.get("upto")
    if type(upto) is not int or upto < 0:
        raise MalformedFrame("an ack's upto must be a non-negative integer")
    return upto


def command_id(frame):
    """A command's id: an integer (or absent: None), echoed in its reply."""
    value = frame.get("id")
    if value is not None and type(value) is not int:
        raise MalformedFrame("a command's id must be an integer")
    return value


def p2p_port(frame):
    """(port, certificate fingerprint or None) from a password frame's p2p
    member, or None without one. Any host it names is not read."""
    p2p = frame.get("p2p")
    if p2p is None:
        return None
    port = p2p.get("port") if isinstance(p2p, dict) else None
    if type(port) is not int or not 1 <= port <= 65535:
        raise MalformedFrame("p2p needs a port 1-65535")
    fingerprint = p2p.get("fingerprint")
    if fingerprint is not None and (not isinstance(fingerprint, str) or len(fingerprint) != 64):
        raise MalformedFrame("p2p fingerprint must be 64 hex digits")
    return port, fingerprint
