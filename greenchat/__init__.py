"""greenchat: a chat server and terminal client on gevent green threads."""

__version__ = "1.0.0"
