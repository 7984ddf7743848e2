"""The greenchat server (bin/greenchat-server): everything only the server runs.

- server.py: the process's listener, connection limits, TLS, and each
  connection's walk through hello, login and commands;
- store.py: all of its SQLite; runtime.py: process-wide settings;
- accounts.py, blocks.py, turns.py, addresses.py, limits.py: the parts it is
  built from, each with its own unit tests.
"""

from greenchat.server.server import ChatServer

__all__ = ["ChatServer"]
