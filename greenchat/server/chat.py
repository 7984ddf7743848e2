"""Who is online, who blocks whom, who left when; and the server's commands.

Strategy
- Everything a command reads is in memory: the sessions online, the blocks
  (loaded at start, written through to the store) and the logout times
  (oldest first, so `whoelsesince` reads from the newest end and stops at
  its cutoff). Only a message to an offline user, and a block or unblock,
  wait on the store.
- One table maps each server command of commands.py to its handler; a
  handler returns a Reply, or raises CommandError with the line to show.
- A message or broadcast gets its id, goes to the mailbox of every recipient
  online, and becomes a row of the message log; the sender's answer waits
  for that row's commit (a Later), without holding the sender's reader. A
  message to an offline user is logged only within the recipient's quota.
  A broadcast is encoded once and the same bytes go to every mailbox.
- A block never tells the blocked user whether the blocker is online
  (docs/protocol.md).
"""

import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from greenchat import commands, frames, texts
from greenchat.codec import encode
from greenchat.commands import SERVER, parse_line
from greenchat.errors import CommandError, InvalidCommand, StoreError
from greenchat.server.blocks import Blocks
from greenchat.server.presence import Presence
from greenchat.server.session import CLOSING, LOADING

# `history`: how many messages by default, and at most.
HISTORY_DEFAULT = 20
HISTORY_MAX = 500

log = logging.getLogger("greenchat.server")


@dataclass(frozen=True)
class Reply:
    """A command's answer: its lines, and members the reply frame adds."""
    lines: tuple = ()
    extra: dict = None


NOTHING = Reply()
# A message to an offline user, stored for their next login.
STORED = Reply(extra={"stored": True})


@dataclass(frozen=True)
class Later:
    """A command whose answer waits for the store call `pending`:
    finish(pending) is then its Reply, or raises CommandError."""
    pending: object
    finish: object


def _committed(pending):
    """The value of a message's log write; CommandError if the store failed."""
    try:
        return pending.value()
    except StoreError as exc:
        log.error("a message could not be stored: %s", exc)
        raise CommandError(texts.STORE_FAILED_MESSAGE) from None


def _accepted(pending):
    _committed(pending)
    return NOTHING


class Chat:
    def __init__(self, accounts, store, mailroom, clock):
        self.accounts = accounts
        self.store = store
        self.mailroom = mailroom
        self.clock = clock
        self.online = {}                       # user -> Session, while logged in
        self.blocks = Blocks()
        self.last_logout = OrderedDict()       # user -> time of their latest logout
        self.presence = Presence(self.online, self.blocks)
        self.handlers = {
            commands.MESSAGE: self.message,
            commands.BROADCAST: self.broadcast,
            commands.WHOELSE: self.whoelse,
            commands.WHOELSESINCE: self.whoelsesince,
            commands.BLOCK: self.block,
            commands.UNBLOCK: self.unblock,
            commands.STARTPRIVATE: self.startprivate,
            commands.LOGOUT: self.logout,
            commands.HISTORY: self.history,
        }
        missing = commands.unhandled(self.handlers, SERVER)
        if missing:
            raise TypeError(f"no handler for server commands: {', '.join(missing)}")

    def load(self, store):
        """What the store kept from earlier runs: blocks and logout times."""
        for blocker, blocked in store.all_blocks():
            self.blocks.add(blocker, blocked)
        self.last_logout.update(sorted(store.last_logouts().items(), key=lambda item: item[1]))

    # Comings and goings -----------------------------------------------------

    def came_online(self, session, announce=True):
        """`session`'s user is online (its stored messages still to go out);
        not announced for a session restored after a restart."""
        session.state = LOADING
        # Every id handed out from here on sees this user online.
        session.live_from = self.mailroom.next_id
        self.mailroom.went_live(session)
        # Its own event first: a batch that goes out at once must not reach
        # it with the events before it (online_since would still be 0).
        if announce:
            session.online_since = self.presence.announce(session.user, True)
        self.online[session.user] = session

    def went_offline(self, session, now, announce=True):
        """`session`'s user is offline from now on (a deleted account leaves
        no logout time behind)."""
        name = session.user
        if self.online.get(name) is session:
            del self.online[name]
        if session.end_reason != frames.REMOVED:
            self.last_logout.pop(name, None)
            self.last_logout[name] = now
        if announce:
            self.presence.announce(name, False)

    def forget(self, name):
        """Everything held in memory about a deleted account."""
        self.blocks.forget(name)
        self.last_logout.pop(name, None)

    # Commands ---------------------------------------------------------------

    def handle(self, session, line):
        """Run one typed line for `session`; its Reply, or CommandError."""
        if self.presence.batch:
            self.presence.flush()
        spec, args = parse_line(line)
        if spec.where != SERVER:
            raise InvalidCommand()
        return self.handlers[spec](session, *args) or NOTHING

    def names_for(self, asker):
        """The account names `asker` may see: all but its own and those of
        the users who block it (a block hides the blocker)."""
        return sorted(name for name in self.accounts.usernames
                      if name != asker and not self.blocks.blocks(name, asker))

    def _known_other(self, session, user, self_error):
        if user not in self.accounts:
            raise CommandError(texts.INVALID_USER)
        if user == session.user:
            raise CommandError(self_error)

    def _visible_to(self, asker, user):
        return user != asker and not self.blocks.blocks(user, asker)

    def _new_id(self):
        try:
            return self.mailroom.new_id()
        except StoreError as exc:
            log.error("no message id: %s", exc)
            raise CommandError(texts.STORE_FAILED_MESSAGE) from None

    def message(self, session, user, text):
        """message USER TEXT"""
        self._known_other(session, user, texts.CANNOT_MESSAGE_SELF)
        sender = session.user
        if self.blocks.blocks(user, sender):
            raise CommandError(texts.RECIPIENT_BLOCKED_YOU)
        mid = self._new_id()
        if user not in self.accounts:           # deleted while an id was reserved
            raise CommandError(texts.INVALID_USER)
        # From here to the append, no switch: the recipient is online for
        # this id (it is past their live_from) or its row precedes their backlog read.
        now, txn = round(self.clock(), 3), session.txn
        row = (mid, sender, user, text, now, txn, None)
        target = self.online.get(user)
        if target is None:
            config = self.mailroom.config
            return Later(self.store.append(row, (config.offline_limit,
                                                 config.offline_limit_bytes)),
                         lambda pending: self._stored(pending, user))
        target.deliver(encode(frames.message(sender, text, mid, now, txn)), mid)
        return Later(self.store.append(row), _accepted)

    @staticmethod
    def _stored(pending, user):
        if not _committed(pending):
            raise CommandError(texts.mailbox_full(user))
        return STORED

    def broadcast(self, session, text):
        """broadcast TEXT"""
        sender = session.user
        mid = self._new_id()
        now, txn = round(self.clock(), 3), session.txn
        frame = encode(frames.message(sender, text, mid, now, txn, broadcast=True))
        blockers = self.blocks.blockers_of(sender)
        online = self.online
        for user, other in online.items():
            if user != sender and user not in blockers:
                other.deliver(frame, mid)
        left_out = sorted(user for user in blockers if user in online)
        # Counted outside the loop: a fan-out pays nothing per delivery for it.
        delivered = len(online) - (sender in online) - len(left_out)
        skipped = " ".join(left_out) or None
        pending = self.store.append((mid, sender, None, text, now, txn, skipped))
        # Whether or not they are online: the notice must not tell.
        # How many got it: as many as the sender's whoelse lists, no more told.
        reply = Reply((texts.BROADCAST_PARTIAL,) if blockers else (),
                      extra={"delivered": delivered})
        return Later(pending, lambda done: _committed(done) and reply)

    def history(self, session, user, count):
        """history USER [N]

        The last N (default 20, at most 500) direct messages between you and
        USER, both ways, oldest first, in the reply's "history" member.
        """
        self._known_other(session, user, texts.INVALID_USER)
        rows = self.store.history(session.user, user,
                                  min(count or HISTORY_DEFAULT, HISTORY_MAX))
        if not rows:
            return Reply((texts.no_history(user),))
        return Reply(extra={"history": [frames.history_entry(*row) for row in rows]})

    def whoelse(self, session):
        """whoelse"""
        names = sorted(u for u in self.online if self._visible_to(session.user, u))
        return Reply(names or (texts.NO_OTHER_USERS_ONLINE,))

    def whoelsesince(self, session, seconds):
        """whoelsesince SECONDS"""
        cutoff = self.clock() - seconds
        recent = set(self.online)
        logouts = self.last_logout
        if logouts and logouts[next(iter(logouts))] >= cutoff:
            recent.update(logouts)            # all of them: no need to look at each
        else:
            for user, at in reversed(logouts.items()):
                if at < cutoff:
                    break
                recent.add(user)
        names = sorted(u for u in recent if self._visible_to(session.user, u))
        return Reply(names or (texts.NO_OTHER_USERS,))

    def block(self, session, user):
        """block USER"""
        self._known_other(session, user, texts.CANNOT_BLOCK_SELF)
        if self.blocks.blocks(session.user, user):
            raise CommandError(texts.already_blocked(user))
        self.store.add_block(session.user, user)
        self.blocks.add(session.user, user)
        # A private link between the two ends with the block: tell both
        # clients (each ignores it if it has no such link).
        other = self.online.get(user)
        if other is not None:
            other.send(frames.private_stop(session.user))
            session.send(frames.private_stop(user))
        return Reply((texts.blocked(user),))

    def unblock(self, session, user):
        """unblock USER"""
        self._known_other(session, user, texts.CANNOT_UNBLOCK_SELF)
        if not self.blocks.blocks(session.user, user):
            raise CommandError(texts.not_blocked(user))
        self.store.remove_block(session.user, user)
        self.blocks.remove(session.user, user)
        return Reply((texts.unblocked(user),))

    def startprivate(self, session, user):
        """startprivate USER

        Answers with USER's link address and a fresh one-time token in the
        reply's "private" member, and sends USER's client the same token for
        the requester; the clients do the rest directly.
        """
        self._known_other(session, user, texts.CANNOT_PRIVATE_SELF)
        # The block first: whether the blocker is online is none of the sender's business.
        if self.blocks.blocks(user, session.user):
            raise CommandError(texts.user_blocked_you(user))
        target = self.online.get(user)
        if target is None or target.state is CLOSING:
            raise CommandError(texts.user_offline(user))
        if target.p2p is None:
            raise CommandError(texts.private_unavailable(user))
        token = secrets.token_urlsafe(24)
        target.send(frames.private_offer(session.user, token))
        host, port, fingerprint = target.p2p
        offer = {"user": user, "host": host, "port": port, "token": token}
        if fingerprint is not None:
            offer["fingerprint"] = fingerprint
        return Reply(extra={"private": offer})

    def logout(self, session):
        """logout"""
        session.end_reason = frames.LOGOUT
