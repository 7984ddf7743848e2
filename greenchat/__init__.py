"""greenchat: a chat server and terminal client on gevent green threads."""

__version__ = "1.0.0"

# Sent in the first exchange; a peer speaking another version is refused.
PROTOCOL_VERSION = 1
