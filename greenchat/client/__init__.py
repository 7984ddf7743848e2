"""The greenchat terminal client (bin/greenchat-client).

- client.py: the session with the server, and the commands typed;
- peer.py: private links straight to other clients;
- console.py, lineedit.py: the keyboard and the screen.
"""

from greenchat.client.client import Client

__all__ = ["Client"]
