"""Micro-measure of the agent framework's share of an LLM turn, in-process, for the ``llm-instant`` split.

Where it sits: inside the *agent* stage of the path (worker → ``LLMAgent.respond`` → model). It calls
``LLMAgent.respond`` sequentially, with a realistic prompt (four knowledge passages, six history
items), against

- pydantic-ai's ``FunctionModel`` (no HTTP at all): the framework's own cost per turn; and
- the real ``OpenAIChatModel`` over HTTP to the benchmark's fake model server (another process):
  framework + openai SDK + httpx, i.e. everything warelay delegates for one model call.

Knowledge retrieval is stubbed (it is warelay's own work, measured in the end-to-end figure).
``python bench/llm_micro.py --base-url URL --turns N --out FILE`` writes CPU and wall ms per turn.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from warelay.agents.base import AgentDeps, AgentSpec, HistoryItem, Passage, SessionState, Turn
from warelay.agents.llm import LLMAgent
from warelay.config import Settings
from warelay.domain import InboundMessage, TextContent, UserRef

FAQ = Path(__file__).resolve().parents[1] / "src" / "warelay" / "demo" / "knowledge" / "faq.csv"


class FixedRetriever:
    """Always the same passages: retrieval is warelay's work and stays out of this measure."""

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = list(passages)

    async def search(self, *, tenant_id: int, agent_id: int, query: str, limit: int = 5) -> Sequence[Passage]:
        """The fixed passages, at most ``limit``."""
        return self.passages[:limit]


def _passages() -> list[Passage]:
    with FAQ.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:4]
    return [
        Passage(id=i, document="faq.csv", title=None, content=r["question"], answer=r["answer"], score=0.9)
        for i, r in enumerate(rows, 1)
    ]


def _turn(n: int) -> Turn:
    now = datetime.now(UTC)
    history = tuple(
        HistoryItem(role="user" if i % 2 == 0 else "assistant", text=f"earlier message {i}", at=now)
        for i in range(6)
    )
    message = InboundMessage(
        provider_message_id=f"wamid.micro{n}",
        number_id="106540352242922",
        sender=UserRef(wa_id="15550000001", profile_name="Bench User"),
        timestamp=now - timedelta(seconds=1),
        type="text",
        content=TextContent(body=f"What are your opening hours? ({n})"),
    )
    return Turn(
        tenant_id=1,
        tenant="default",
        number_id=1,
        phone_number_id="106540352242922",
        agent_id=1,
        user_key="15550000001",
        user_name="Bench User",
        session=SessionState(session_id="s1"),
        messages=(message,),
        history=history,
    )


def _answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart("Our café opens at 8:00 and closes at 20:00 on weekdays.")])


async def _measure(agent: LLMAgent, turns: int, warmup: int) -> dict[str, float]:
    for n in range(warmup):
        await agent.respond(_turn(n))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for n in range(turns):
        await agent.respond(_turn(n))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "turns": turns,
        "cpu_ms_per_turn": round(cpu / turns * 1000, 3),
        "wall_ms_per_turn": round(wall / turns * 1000, 3),
    }


async def run(base_url: str, turns: int) -> dict[str, Any]:
    """Both measures."""
    settings = Settings(llm={"base_url": base_url, "model": "bench-model"})
    deps = AgentDeps(retriever=FixedRetriever(_passages()), settings=settings)
    spec = AgentSpec(id=1, tenant_id=1, name="default", kind="llm", config={})
    function_model: Model = FunctionModel(_answer, model_name="bench-function")
    framework = LLMAgent(spec, deps, model=function_model)
    over_http = LLMAgent(spec, deps)
    try:
        results = {
            "pydantic_ai_function_model": await _measure(framework, turns, warmup=50),
            "pydantic_ai_openai_sdk_http": await _measure(over_http, turns, warmup=50),
        }
    finally:
        await over_http.aclose()
    return results


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        result = asyncio.run(run(args.base_url, args.turns))
    else:
        # warelay serve runs on uvicorn, which picks uvloop when it is installed: measure on the same loop.
        result = uvloop.run(run(args.base_url, args.turns))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
