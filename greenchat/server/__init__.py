"""The greenchat server (bin/greenchat-server): everything only the server runs.

- server.py: ChatServer, the listener, connection limits, TLS, and each
  connection's walk through hello, login and commands;
- session.py: a connection's Session; Mailroom, the rules that keep mail;
- chat.py and presence.py: who is online, blocks, the commands, presence;
- accounts.py: the accounts, password checks, failures and locks;
- store.py: all of its SQLite; runtime.py: process-wide settings;
- blocks.py, turns.py, addresses.py, limits.py: small parts, each with its
  own unit tests.
"""
