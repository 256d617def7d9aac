"""Hybrid retrieval wired end to end: knowledge embedded at start through WARELAY_EMBEDDINGS__*, each
question embedded when it is answered, against an OpenAI-compatible /embeddings server on loopback."""

from __future__ import annotations

from pathlib import Path

from tests.fakes_openai import OpenAICompatibleServer
from tests.integration.stack import run_stack

FAQ = "question,answer\nDo you deliver to Bandung?,Yes: same-day delivery anywhere in Bandung.\n"


async def test_knowledge_is_embedded_at_start_and_questions_when_asked(db_url: str, tmp_path: Path) -> None:
    knowledge = tmp_path / "knowledge"
    knowledge.mkdir()
    (knowledge / "faq.csv").write_text(FAQ, encoding="utf-8")
    async with (
        OpenAICompatibleServer() as endpoint,
        run_stack(
            db_url,
            agent={"kind": "knowledge", "knowledge_dir": str(knowledge)},
            embeddings={"base_url": endpoint.base_url, "model": "fake-embed", "api_key": "emb-key-1"},
        ) as stack,
    ):
        ingest = list(endpoint.embedding_requests)
        assert len(ingest) == 1
        assert ingest[0]["model"] == "fake-embed"
        assert any("Bandung" in text for text in ingest[0]["input"])
        await stack.simulator.user_sends("15551290001", "do you deliver to bandung")
        texts = await stack.replies_to("15551290001", 1)
        assert texts == ["Yes: same-day delivery anywhere in Bandung."]
        questions = endpoint.embedding_requests[len(ingest) :]
        assert [q["input"] for q in questions] in (
            ["do you deliver to bandung"],
            [["do you deliver to bandung"]],
        )
