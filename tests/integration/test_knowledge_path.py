"""The offline knowledge agent end to end, on the demo knowledge base loaded from config at start."""

from __future__ import annotations

from tests.integration.stack import run_stack
from warelay.cli import demo_knowledge_dir


async def test_knowledge_agent_answers_from_the_folder_and_admits_what_it_does_not_know(db_url: str) -> None:
    agent = {"kind": "knowledge", "knowledge_dir": str(demo_knowledge_dir())}
    async with run_stack(db_url, agent=agent) as stack:
        await stack.simulator.user_sends("15551280001", "When do you open?")
        (answer,) = await stack.replies_to("15551280001", 1)
        assert "8:00" in answer

        await stack.simulator.user_sends("15551280002", "¿Hacen envíos internacionales a Japón?")
        (spanish,) = await stack.replies_to("15551280002", 1)
        assert "EMS" in spanish  # the Spanish FAQ row on international shipping

        await stack.simulator.user_sends("15551280003", "What is the capital of France?")
        (unknown,) = await stack.replies_to("15551280003", 1)
        assert "don't know" in unknown
