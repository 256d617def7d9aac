"""Seed 002's own clients against a live warelay on loopback: its Python and TypeScript sync clients.

Both are read from the seed's code blocks in ``../shared/seeds/`` at test time (not copied into the
repository) and run the seed's flow after a signed webhook opened the conversation: lookup tenant
→ get conversation → add the user's and the bot's messages → sync state. The Python client uses
``requests`` (run in a thread: the server shares this event loop); the TypeScript one runs under
Node.js with axios through ``tsx`` (installed by ``make test`` with ``npm ci`` in tests/seed_clients).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.stack import PHONE_NUMBER_ID, Stack, run_stack
from tests.integration.test_sync_api import make_key, open_conversation
from warelay.storage.models import Conversation, Number, TranscriptEntry

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seeds" / "002_3bd961317263e8e7.txt"
CLIENTS = ROOT / "tests" / "seed_clients"
TSX = CLIENTS / "node_modules" / ".bin" / "tsx"
# `make unit` (hence `make test` and CI) installs the Node.js clients first; there they must run.
REQUIRED = os.environ.get("WARELAY_REQUIRE_POSTGRES") == "1" or bool(os.environ.get("CI"))

CONTEXT = {
    "selectedItems": [{"id": "item_123", "name": "Pizza Margherita", "quantity": 2, "price": 50.00}],
    "orderTotal": 50.00,
    "paymentMethod": "yape",
    "deliveryAddress": {"street": "Av. Principal 123", "city": "Lima"},
}
BOT_TEXT = "Perfecto! Tu pedido está confirmado. Total: S/ 50.00"


def code_block(heading: str, language: str) -> str:
    """The first ``language`` code block after ``heading`` in seed 002, as written there."""
    text = SEED.read_text(encoding="utf-8")
    at = text.index(heading)
    fence = f"```{language}\n"
    start = text.index(fence, at) + len(fence)
    return text[start : text.index("\n```", start) + 1]


def python_client() -> tuple[Any, Any]:
    """Seed 002's Python ``ConversationSyncClient`` class (and its ``requests``), run from the code block."""
    namespace: dict[str, Any] = {"__name__": "seed_002_python_example"}
    code = compile(code_block("### Python Example", "python"), f"{SEED}#python-example", "exec")
    exec(code, namespace)  # noqa: S102  # the seed's own client is what this test runs, unchanged
    return namespace["ConversationSyncClient"], namespace["requests"]


def test_the_seed_code_blocks_are_found() -> None:
    assert SEED.is_file(), f"seed 002 is expected at {SEED} (../shared/seeds from the repository)"
    python = code_block("### Python Example", "python")
    typescript = code_block("### Node.js/TypeScript Example", "typescript")
    assert python.startswith("import requests\n")
    assert "class ConversationSyncClient:" in python
    assert "class ConversationSyncClient {" in typescript
    assert "import axios" in typescript


async def _state(stack: Stack, session_id: str) -> tuple[Any, list[tuple[str, str]]]:
    async with stack.runtime.engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    Conversation.intent,
                    Conversation.step,
                    Conversation.is_active,
                    Conversation.version,
                    Conversation.context,
                    Conversation.meta.label("meta"),
                ).where(Conversation.id == session_id)
            )
        ).one()
        transcript = (
            await conn.execute(
                select(TranscriptEntry.role, TranscriptEntry.content)
                .where(TranscriptEntry.conversation_id == session_id)
                .order_by(TranscriptEntry.id)
            )
        ).all()
    return row, [(r.role, r.content) for r in transcript]


async def _agent_id(stack: Stack) -> str:
    async with stack.runtime.engine.connect() as conn:
        agent_id = (
            await conn.execute(select(Number.agent_id).where(Number.phone_number_id == PHONE_NUMBER_ID))
        ).scalar_one()
    return str(agent_id)


async def test_seed_python_client_runs_the_seed_flow(db_url: str) -> None:
    client_class, requests = python_client()
    async with run_stack(db_url) as stack:
        await open_conversation(stack, "51999999911", "Quiero una pizza")
        key = await make_key(stack, "default", "conversations:read", "conversations:write")
        client = client_class(stack.url, api_key=key)
        phone = "+51999999911"

        tenant_info = await asyncio.to_thread(client.lookup_tenant, phone)
        assert tenant_info["subDomain"] == "default"
        assert tenant_info["botId"] == await _agent_id(stack)
        assert tenant_info["isActive"] is True
        session_id = tenant_info["sessionId"]

        conversation = await asyncio.to_thread(client.get_conversation, phone)
        assert conversation["sessionId"] == session_id
        assert conversation["userId"] == phone
        assert conversation["context"]["lastUserMessage"] == "Quiero una pizza"
        same = await asyncio.to_thread(client.get_conversation, "51999999911", tenant_info["botId"])
        assert same["sessionId"] == session_id

        await asyncio.to_thread(client.add_message, session_id, "user", "Quiero una pizza")
        added = await asyncio.to_thread(client.add_message, session_id, "bot", BOT_TEXT)
        assert [(m["role"], m["content"]) for m in added["context"]["previousMessages"]] == [
            ("user", "Quiero una pizza"),
            ("bot", "echo: Quiero una pizza"),
            ("bot", BOT_TEXT),
        ]

        synced = await asyncio.to_thread(
            client.sync_conversation,
            session_id=session_id,
            intent="payment",
            step="processing_payment",
            context=CONTEXT,
            metadata={"agent_confidence": 0.93, "agent_model": "gpt-4"},
        )
        assert synced["sessionId"] == session_id
        assert (synced["currentIntent"], synced["currentStep"]) == ("payment", "processing_payment")
        assert {k: synced["context"][k] for k in CONTEXT} == CONTEXT
        assert synced["context"]["previousMessages"] == added["context"]["previousMessages"]
        assert synced["version"] == 2

        row, transcript = await _state(stack, session_id)
        assert (row.intent, row.step, row.is_active, row.version) == (
            "payment",
            "processing_payment",
            True,
            2,
        )
        assert row.context == CONTEXT
        assert row.meta == {"agent_confidence": 0.93, "agent_model": "gpt-4"}
        assert transcript == [("user", "Quiero una pizza"), ("bot", BOT_TEXT)]

        # The seed's error handling: no active conversation is an HTTPError with status 404.
        with pytest.raises(requests.HTTPError) as caught:
            await asyncio.to_thread(client.lookup_tenant, "+51999999000")
        assert caught.value.response.status_code == 404
        assert caught.value.response.json() == {
            "type": "0",
            "message": "no active conversation for +51999999000",
            "data": None,
        }
        # And without the key the seed's client is refused.
        with pytest.raises(requests.HTTPError) as caught:
            await asyncio.to_thread(client_class(stack.url).lookup_tenant, phone)
        assert caught.value.response.status_code == 401


async def test_seed_typescript_client_runs_the_seed_flow(db_url: str) -> None:
    if not TSX.is_file():
        message = f"{TSX} is missing: run `make test` (or `npm ci` in {CLIENTS})"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for the seed's TypeScript client"
    async with run_stack(db_url) as stack:
        await open_conversation(stack, "51999999912", "Quiero una pizza")
        key = await make_key(stack, "default", "conversations:read", "conversations:write")
        scenario = {
            "seed": str(SEED),
            "baseUrl": stack.url,
            "phone": "+51999999912",
            "unknownPhone": "51999999000",
            "userText": "Quiero una pizza",
            "botText": BOT_TEXT,
            "intent": "payment",
            "step": "processing_payment",
            "context": CONTEXT,
            "metadata": {"agentModel": "gpt-4"},
        }
        process = await asyncio.create_subprocess_exec(
            str(TSX),
            str(CLIENTS / "seed002_driver.ts"),
            json.dumps(scenario),
            cwd=CLIENTS,
            env={**os.environ, "WARELAY_API_KEY": key},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err.decode()
        result = json.loads(out)

        tenant = result["tenant"]
        assert tenant["subDomain"] == "default"
        assert tenant["botId"] == await _agent_id(stack)
        session_id = tenant["sessionId"]
        assert result["conversation"]["sessionId"] == session_id
        assert result["conversation"]["userId"] == "+51999999912"
        assert result["conversation"]["context"]["lastUserMessage"] == "Quiero una pizza"
        history = [(m["role"], m["content"]) for m in result["botAdded"]["context"]["previousMessages"]]
        assert history == [("user", "Quiero una pizza"), ("bot", "echo: Quiero una pizza"), ("bot", BOT_TEXT)]
        synced = result["synced"]
        assert (synced["currentIntent"], synced["currentStep"]) == ("payment", "processing_payment")
        assert {k: synced["context"][k] for k in CONTEXT} == CONTEXT
        assert result["after"]["version"] == synced["version"] == 2
        assert result["after"]["context"] == synced["context"]
        assert result["missing"] == {
            "status": 404,
            "body": {"type": "0", "message": "no active conversation for 51999999000", "data": None},
        }

        row, transcript = await _state(stack, session_id)
        assert (row.intent, row.step, row.version) == ("payment", "processing_payment", 2)
        assert row.context == CONTEXT
        assert row.meta == {"agentModel": "gpt-4"}
        assert transcript == [("user", "Quiero una pizza"), ("bot", BOT_TEXT)]
    assert not list((CLIENTS / ".generated").glob("*.ts")), "the driver leaves no generated module behind"
