"""A scripted agent for pipeline tests, registered as kind ``test-echo`` (a Fake at the Agent seam).

It answers ``echo: <text>``. Words in the user's text steer it: ``sleep:<seconds>`` waits first,
``fail:<n>`` fails the first n attempts of that message, ``never`` always fails,
``state:<intent>/<step>`` sets the session state, and ``hang`` blocks forever in a process started
with ``TEST_ECHO_HANG=1`` (to kill it mid-turn).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

from warelay.agents.base import AgentDeps, AgentReply, AgentSpec, StateChange, Turn, register_agent
from warelay.domain import OutboundContent, OutButtons, OutReaction, OutText, ReplyButton

ATTEMPTS: Counter[str] = Counter()


class EchoAgent:
    """Echoes the user's text, following the directives in it."""

    kind = "test-echo"

    def __init__(self, spec: AgentSpec, deps: AgentDeps) -> None:
        self.spec = spec

    async def respond(self, turn: Turn) -> AgentReply:
        """Answer ``echo: <text>`` after applying the directives."""
        text = turn.text
        wamid = turn.messages[-1].provider_message_id
        ATTEMPTS[wamid] += 1
        state = None
        extra: list[OutboundContent] = []
        for word in text.split():
            if word.startswith("sleep:"):
                await asyncio.sleep(float(word.split(":", 1)[1]))
            elif word.startswith("fail:") and ATTEMPTS[wamid] <= int(word.split(":", 1)[1]):
                raise RuntimeError(f"scripted failure {ATTEMPTS[wamid]}")
            elif word == "hang" and os.environ.get("TEST_ECHO_HANG") == "1":
                await asyncio.sleep(3600)
            elif word == "never":
                raise RuntimeError("scripted permanent failure")
            elif word.startswith("state:"):
                intent, _, step = word.split(":", 1)[1].partition("/")
                state = StateChange(intent=intent, step=step or None, context={"last": text})
            elif word.startswith("buttons:"):  # buttons:Hot,Iced → a reply-button message after the echo
                titles = word.split(":", 1)[1].split(",")
                buttons = tuple(ReplyButton(id=f"b{n}", title=t) for n, t in enumerate(titles, 1))
                extra.append(OutButtons(body="Pick one", buttons=buttons))
            elif word == "react":
                extra.append(OutReaction(message_id=wamid, emoji="👍"))
        return AgentReply(replies=(OutText(body=f"echo: {text}"), *extra), state=state)


register_agent("test-echo")(EchoAgent)
