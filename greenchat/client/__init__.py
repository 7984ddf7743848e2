"""The greenchat terminal client (bin/greenchat-client).

- client.py: Client, the session with the server, and the commands typed;
- links.py and peer.py: private links straight to other clients;
- console.py, lineedit.py: the keyboard and the screen.
"""
