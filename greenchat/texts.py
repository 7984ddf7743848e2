"""Every text a user sees, in one place.

These strings are greenchat's user interface and are specified to the letter
by the project's issues: change them only with the specification. Server-side
texts travel in frames; client-side texts are printed by the client.
"""

import time

# Login
PROMPT_USERNAME = "Username: "
PROMPT_PASSWORD = "Password: "
INVALID_USERNAME = "Invalid Username. Please try again"
INVALID_PASSWORD = "Invalid Password. Please try again"
ACCOUNT_NOW_BLOCKED = "Invalid Password. Your account has been blocked. Please try again later"
ACCOUNT_BLOCKED = "Your account is blocked due to multiple login failures. Please try again later"
ALREADY_LOGGED_IN = "This account is already logged in"
WELCOME = "Welcome to the greatest messaging application ever!"
LOGIN_UNAVAILABLE = "Error. The server cannot log you in right now; try again later"

# Commands
INVALID_COMMAND = "Error. Invalid command"
INVALID_USER = "Error. Invalid user"
CANNOT_MESSAGE_SELF = "Error. Cannot message self"
RECIPIENT_BLOCKED_YOU = "Your message could not be delivered as the recipient has blocked you"
BROADCAST_PARTIAL = "Your message could not be delivered to some recipients"
NO_OTHER_USERS_ONLINE = "No other users online"
NO_OTHER_USERS = "No other users"
CANNOT_BLOCK_SELF = "Error. Cannot block self"
STORE_FAILED_MESSAGE = "Error. The server could not store your message; try again"
STORE_FAILED = "Error. The server could not save that; try again"
CANNOT_UNBLOCK_SELF = "Error. Cannot unblock self"


def message_too_long(size, limit):
    """Client-side: a command whose frame (`size` bytes) is over the server's
    `limit` is not sent."""
    return f"Error. Message too long ({size} bytes, at most {limit})"


def mailbox_full(user):
    return f"Error. {user}'s mailbox is full"


def blocked(user):
    return f"{user} is blocked"


def already_blocked(user):
    return f"Error. {user} is already blocked"


def unblocked(user):
    return f"{user} is unblocked"


def not_blocked(user):
    return f"Error. {user} was not blocked"


# Private messaging
CANNOT_PRIVATE_SELF = "Error. Cannot start private messaging with self"


def user_offline(user):
    return f"Error. {user} is offline"


def user_blocked_you(user):
    return f"Error. {user} has blocked you"


def private_already_active(user):
    return f"Error. Private messaging with {user} is already active"


def private_unavailable(user):
    return f"Error. {user} cannot accept private messaging"


def private_connect_failed(user):
    return f"Error. Could not connect to {user} for private messaging"


def start_private(user):
    return f"Start private messaging with {user}"


def started_private_with_you(user):
    return f"{user} has started private messaging with you"


def private_not_enabled(user):
    return f"Error. Private messaging to {user} not enabled"


def private_stopped(user):
    return f"Private messaging with {user} stopped"


# The web client's own answer to the private commands: a browser has no port to listen on.
PRIVATE_NOT_IN_WEB = "Error. Private messaging is not available in the web client"
# The web client's header: the state of its connection.
WEB_CONNECTED = "connected"
WEB_RECONNECTING = "reconnecting"
WEB_SIGNED_OUT = "signed out"


def private_line(sender, text):
    return f"{sender}(private): {text}"


# Display of events
def message_line(sender, text):
    return f"{sender}: {text}"


def presence_line(user, online):
    return f"{user} logged in" if online else f"{user} logged out"


# Hints: a terminal's alone, dim, never in piped mode
HELP_HINT = "Type help for the commands."
LOWER_CASE_HINT = "commands are lower case"
NOT_A_COMMAND_HINT = "type help for the commands"


NO_ONE_ONLINE = "(no one else is online)"
# A terminal's marks of what a message is
BROADCAST_MARK = "[all]"
OFFLINE_MARK = "(offline)"


def day_line(stamp):
    """`--- Tuesday 1 December ---` for a time.struct_time."""
    return f"--- {time.strftime('%A', stamp)} {stamp.tm_mday} {time.strftime('%B', stamp)} ---"


def stored_for(user):
    return f"({user} is offline; they will get it when they log in)"


def retry_in(seconds):
    return f"Please try again in {seconds} seconds"


def usage_hint(syntax):
    return f"usage: {syntax}"


def history_line(stamp, sender, text):
    """One message of a `history` answer; `stamp` is "YYYY-MM-DD HH:MM" in
    the client's local time."""
    return f"[{stamp}] {sender}: {text}"


def no_history(user):
    return f"No messages with {user}"


# Session end
GOODBYE = "Goodbye"
LOGGED_OUT_IDLE = "You have been logged out due to inactivity"
SERVER_SHUTTING_DOWN = "Server is shutting down"
ACCOUNT_REMOVED = "Your account has been removed"


def idle_warning(seconds):
    return f"You will be logged out in {seconds} seconds due to inactivity"


CONNECTION_LOST = "Connection to server lost"
RECONNECTING = "Connection to server lost. Reconnecting..."
RECONNECTED = "Reconnected"
PROMPT = "> "


def cannot_connect(host, port, reason):
    return f"Cannot connect to server at {host}:{port}: {reason}"


def certificate_refused(host, port, reason):
    return (f"Cannot connect to server at {host}:{port}: its TLS certificate was refused "
            f"({reason}); give the right CA with --ca FILE")


def certificate_for_another_name(host, port, reason):
    return (f"Cannot connect to server at {host}:{port}: its TLS certificate is not for {host} "
            f"({reason}); make one that is with greenchat-admin mkcert --name {host}")


def tls_failed(host, port, reason):
    return (f"Cannot connect to server at {host}:{port}: TLS handshake failed ({reason}); "
            f"does the server use TLS?")


# Protocol errors the server reports before closing a connection
FRAME_TOO_LARGE = "Error. Frame too large"
MALFORMED_FRAME = "Error. Malformed frame"
UNSUPPORTED_VERSION = "Error. Unsupported protocol version"
LOGIN_TIMEOUT = "Error. Login took too long"
FLOODING = "Error. Too many commands too fast; disconnected"
TOO_MANY_CONNECTIONS = "Error. Too many connections; try again later"
TLS_REQUIRED = "Error. This server requires TLS; connect with --tls"
