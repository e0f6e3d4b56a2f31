"""Commands that make the backend produce each kind of output, for end-to-end tests."""

import io
import time
from pathlib import Path
from typing import Annotated, Literal

from errbot import BotPlugin, botcmd

from bot.plugin import Arg, Risk, action


class TestCommands(BotPlugin):
    @botcmd(admin_only=True)
    def adminonly(self, msg, args):
        """An admin-only command."""
        return "admin command ran"

    @botcmd
    def bigoutput(self, msg, args):
        """Reply with N numbered lines inside a code fence."""
        count = int(args or "3000")
        lines = "\n".join(f"line {n:05d} " + "x" * 40 for n in range(count))
        return f"```text\n{lines}\n```"

    @botcmd
    def leak(self, msg, args):
        """Reply with a line that contains credentials."""
        return "connect with postgres://app:hunter2pass@db:5432/app and token=abc123secretvalue"

    @botcmd
    def slow(self, msg, args):
        """Sleep for the given seconds, then answer."""
        time.sleep(float(args or "1"))
        return f"slept {args}"

    @botcmd
    def twoparts(self, msg, args):
        """Yield two replies in order."""
        yield f"first {args}"
        yield f"second {args}"

    @botcmd
    def card(self, msg, args):
        """Send a card with fields."""
        self.send_card(
            title="Deploy",
            body="all good",
            color="green",
            fields=(("env", "staging"), ("version", args or "1.0")),
            in_reply_to=msg,
        )

    @botcmd
    def upload(self, msg, args):
        """Upload a file to the channel."""
        data = (args or "hello").encode()
        self.send_stream_request(
            msg.frm.room if hasattr(msg.frm, "room") else msg.frm,
            io.BytesIO(data),
            name="out.txt",
            size=len(data),
        )

    @botcmd
    def progress(self, msg, args):
        """Post a message, edit it, and react to the command."""
        backend = self._bot
        futures = backend.post(msg.to if msg.is_group else msg.frm, "step 1/2")
        post = futures[-1].result(timeout=10)
        backend.poster.edit(post["id"], "step 2/2 done").result(10)
        backend.poster.react(msg.extras["post_id"], "white_check_mark").result(10)

    @botcmd
    def sendto(self, msg, args):
        """Send a greeting to each identifier given (@user, ~channel, team/channel, id)."""
        for text in args.split():
            try:
                target = self.build_identifier(text)
            except ValueError as exc:
                return f"error: {exc}"
            self.send(target, f"hello {text}")
        return "sent"

    @botcmd
    def occupants(self, msg, args):
        """List the people in a channel."""
        return " ".join(sorted(o.person for o in self.query_room(args).occupants))

    @botcmd
    def myrooms(self, msg, args):
        """List the channels the bot is in."""
        return " ".join(sorted(str(room) for room in self._bot.rooms()))

    @botcmd
    def whois(self, msg, args):
        """Show the sender's identity as the backend sees it."""
        return f"{msg.frm.person} {msg.frm.aclattr}"

    def callback_room_joined(self, room, identifier, invited_by):
        self.send(room, f"welcome {identifier.person} to {room}")

    def callback_room_left(self, room, identifier, kicked_by):
        if identifier != self._bot.bot_identifier:
            self.send(room, f"{identifier.person} left, removed by {kicked_by.person}")

    def callback_reaction(self, reaction):
        channel = self._bot.query_room(reaction.reacted_to["channel_id"])
        self.send(channel, f"{reaction.reactor.person} reacted :{reaction.reaction_name}:")

    def callback_mention(self, msg, people):
        if msg.body.startswith("!"):
            return  # commands mentioning people are answered by the command
        names = " ".join(sorted(p.person for p in people))
        self.send(msg.to if msg.is_group else msg.frm, f"mentioned {names}")

    @botcmd(admin_only=True)
    def adminslow(self, msg, args):
        """An admin-only command that runs until the file ``release-adminslow`` appears in the
        bot's working directory (its data directory), at most 60 s: a test decides when."""
        release = Path("release-adminslow")
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "admin slow done"

    @action(risk=Risk.CHANGE, target="env", timeout=60)
    def hold(self, ctx, env: str, seconds: float = 1.0):
        """Hold an environment for some seconds, reporting progress."""
        ctx.progress("holding")
        ctx.wait(seconds)
        return f"held {env} for {seconds:g}s token=sekrit-value-123"

    @action(risk=Risk.DANGEROUS, target="env")
    def wipe(self, ctx, env: Annotated[Literal["staging", "production"], Arg(after="in")]):
        """Wipe an environment (needs approval)."""
        return f"wiped {env}"
