"""The one exception hierarchy.

Everything greenchat raises on purpose derives from GreenchatError. The server
catches it per request (CommandError: an error reply, the session goes on) or
per connection (ProtocolError, ConnectionLost: that session ends); nothing a
client sends can take the server down.
"""

from greenchat import texts


class GreenchatError(Exception):
    """Root of every error greenchat raises on purpose."""


class ConfigError(GreenchatError):
    """A command line or configuration value is unusable."""


class CredentialsError(ConfigError):
    """The credentials file is missing, unreadable or malformed."""


class StoreError(GreenchatError):
    """The SQLite store failed."""


class ProtocolError(GreenchatError):
    """The peer broke the wire protocol; its connection ends."""


class FrameTooLarge(ProtocolError):
    """A frame exceeded the size cap before its end was seen."""


class MalformedFrame(ProtocolError):
    """A frame was not UTF-8 JSON object with a string "type"."""


class Flooding(ProtocolError):
    """The peer sent frames faster than its rate limit allows."""


class Overloaded(GreenchatError):
    """The server refuses work it has no room for; that connection ends."""


class ConnectionLost(GreenchatError):
    """The other end closed the connection or it broke."""


class TLSError(ConnectionLost):
    """A TLS handshake failed, timed out, or met an unexpected certificate.

    `verify` is True when the failure is the certificate being refused,
    `wrong_name` when it was refused for naming another host.
    """

    def __init__(self, reason, verify=False, wrong_name=False):
        super().__init__(reason)
        self.reason = reason
        self.verify = verify
        self.wrong_name = wrong_name


class CommandError(GreenchatError):
    """A command failed; `text` is the line shown to the user who issued it."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text


class InvalidCommand(CommandError):
    """Unknown command or wrong arguments."""

    def __init__(self):
        super().__init__(texts.INVALID_COMMAND)
