"""Named agents: the CLI writes them (validated, secrets encrypted), the agents file seeds them at
start, and a number's agent answers with its own settings (acknowledgement, fallback, bursts)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.integration.stack import PHONE_NUMBER_ID, SECRET_KEY, free_port, run_stack, stack_settings
from warelay.cli import app
from warelay.errors import ConfigError
from warelay.runtime import Runtime
from warelay.storage.db import create_engine

runner = CliRunner(env={"COLUMNS": "250"})


@pytest.fixture
def cli_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in list(os.environ):
        if name.startswith("WARELAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WARELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("WARELAY_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("WARELAY_LOG_LEVEL", "WARNING")
    return sqlite_url


async def _stored_configs(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return [
                json.dumps(r[0]) for r in (await conn.execute(sa.text("SELECT config FROM agents"))).all()
            ]
    finally:
        await engine.dispose()


def test_agents_add_update_show_list_remove(cli_env: str, tmp_path: Path) -> None:
    import asyncio

    prompt = tmp_path / "prompt.md"
    prompt.write_text("You answer for {business_name}.", encoding="utf-8")
    added = runner.invoke(
        app,
        [
            "agents", "add", "support", "--kind", "llm", "--tenant", "acme",
            "--model", "gpt-4o-mini", "--api-key", "sk-top-secret-1", "--system-prompt-file", str(prompt),
            "--tools", "buttons,state", "--reply-language", "es", "--set", "abort_on_newer=false",
            "--set", "burst_window_ms=1200",
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "sk-top-secret-1" not in added.output
    assert "api_key: '********'" in added.output
    assert "burst_window_ms: 1200" in added.output
    assert "sk-top-secret-1" not in "".join(asyncio.run(_stored_configs(cli_env)))

    updated = runner.invoke(
        app, ["agents", "update", "support", "--tenant", "acme", "--temperature", "0.1", "--unset", "model"]
    )
    assert updated.exit_code == 0, updated.output
    shown = runner.invoke(app, ["agents", "show", "support", "--tenant", "acme"])
    assert "temperature: 0.1" in shown.output
    assert "model:" not in shown.output
    assert "reply_language: es" in shown.output  # untouched by the update

    listed = runner.invoke(app, ["agents", "list"])
    assert "support" in listed.output
    assert "buttons, state" in listed.output

    removed = runner.invoke(app, ["agents", "remove", "support", "--tenant", "acme"])
    assert removed.exit_code == 0, removed.output
    assert runner.invoke(app, ["agents", "show", "support", "--tenant", "acme"]).exit_code == 1


def test_invalid_agent_input_is_refused_and_changes_nothing(cli_env: str) -> None:
    ok = runner.invoke(app, ["agents", "add", "bot", "--kind", "knowledge", "--set", "min_confidence=0.5"])
    assert ok.exit_code == 0, ok.output
    for args, reason in [
        (["agents", "update", "bot", "--temperature", "7"], "temperature"),
        (["agents", "update", "bot", "--set", "temprature=0.2"], "unknown key"),
        (["agents", "update", "bot", "--kind", "psychic"], "unknown agent kind 'psychic'"),
        (["agents", "update", "nobody", "--temperature", "0.2"], "no agent 'nobody'"),
        (["agents", "add", "bad name!", "--kind", "llm"], "invalid agent name"),
        (["agents", "add", "x", "--kind", "llm", "--set", "novalue"], "--set takes key=value"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert reason in result.output, (args, result.output)
    shown = runner.invoke(app, ["agents", "show", "bot"])
    assert "min_confidence: 0.5" in shown.output
    assert "temperature" not in shown.output


async def test_the_agents_file_seeds_agents_that_answer_with_their_own_settings(
    db_url: str, tmp_path: Path
) -> None:
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(
        f"""
agents:
  - name: concierge
    kind: test-echo
    numbers: ["{PHONE_NUMBER_ID}"]
    config:
      acknowledgement: "One moment, please."
      fallback_text: "Our concierge is unavailable; we will write back soon."
      abort_on_newer: false
  - tenant: other
    name: spare
    kind: knowledge
""",
        encoding="utf-8",
    )
    async with run_stack(db_url, agents_file=str(agents_file), worker={"max_attempts": 1}) as stack:
        user = "15551280001"
        await stack.simulator.user_sends(user, "hello")
        assert await stack.replies_to(user, 2) == ["One moment, please.", "echo: hello"]
        await stack.simulator.user_sends(user, "never")
        texts = await stack.replies_to(user, 4, timeout=15)
        assert texts[2:] == ["One moment, please.", "Our concierge is unavailable; we will write back soon."]


async def test_an_invalid_agents_file_stops_the_start_with_a_clear_error(db_url: str, tmp_path: Path) -> None:
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(
        "agents:\n  - name: x\n    kind: llm\n    config: {temperature: 9}\n", encoding="utf-8"
    )
    settings = stack_settings(
        db_url, warelay_port=free_port(), sim_url="http://127.0.0.1:9", agents_file=str(agents_file)
    )
    runtime = Runtime(settings, run_workers=False)
    try:
        with pytest.raises(ConfigError, match=r"agents file .*temperature: Input should be less than"):
            await runtime.start()
    finally:
        await runtime.db.close()
        await runtime.engine.dispose()
