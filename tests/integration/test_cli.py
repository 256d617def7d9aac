"""The command line against a real database: keys, numbers, knowledge, db upgrade, send."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.integration.stack import ADMIN_TOKEN, SECRET_KEY, run_stack, settings_env
from warelay.cli import app
from warelay.storage.db import head_revision

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner(env={"COLUMNS": "250"})


@pytest.fixture
def cli_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("WARELAY_"):
            monkeypatch.delenv(name)
    env = {
        "WARELAY_DATABASE_URL": sqlite_url,
        "WARELAY_SECRET_KEY": SECRET_KEY,
        "WARELAY_LOG_LEVEL": "WARNING",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_db_upgrade(cli_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"revision {head_revision()}" in result.output


def test_keys_create_list_revoke(cli_env: dict[str, str]) -> None:
    created = runner.invoke(app, ["keys", "create", "--scope", "admin", "--name", "ops"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("wrl_")
    listed = runner.invoke(app, ["keys", "list"])
    assert key[:12] in listed.stdout
    assert key not in listed.stdout  # never shown again
    assert runner.invoke(app, ["keys", "create", "--scope", "nonsense"]).exit_code == 2
    assert runner.invoke(app, ["keys", "create", "--scope", "admin", "--tenant", "nope"]).exit_code == 1
    assert runner.invoke(app, ["keys", "revoke", "1"]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", "1"]).exit_code == 1


def test_numbers_add_and_list_never_show_secrets(cli_env: dict[str, str]) -> None:
    added = runner.invoke(
        app,
        [
            "numbers",
            "add",
            "--phone-number-id",
            "555000111",
            "--access-token",
            "EAAG-very-secret",
            "--app-secret",
            "app-very-secret",
            "--tenant",
            "shop-a",
            "--display-phone-number",
            "15550001111",
        ],
    )
    assert added.exit_code == 0, added.output
    assert "/webhooks/whatsapp" in added.stdout
    listed = runner.invoke(app, ["numbers", "list"])
    assert "555000111" in listed.stdout
    assert "shop-a" in listed.stdout
    assert "very-secret" not in listed.stdout


def test_knowledge_add_list_remove(cli_env: dict[str, str], tmp_path: Path) -> None:
    faq = tmp_path / "faq.csv"
    faq.write_text("question,answer\nDo you deliver?,Yes, every day.\nWhere are you?,In Bandung.\n")
    added = runner.invoke(app, ["knowledge", "add", str(faq)])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["knowledge", "list"])
    assert "faq.csv" in listed.stdout
    assert runner.invoke(app, ["knowledge", "remove", "faq.csv"]).exit_code == 0
    assert runner.invoke(app, ["knowledge", "remove", "faq.csv"]).exit_code == 1
    bad = tmp_path / "notes.pdf"
    bad.write_bytes(b"%PDF-1.4")
    assert runner.invoke(app, ["knowledge", "add", str(bad)]).exit_code != 0


def test_serving_commands_refuse_unsafe_settings(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARELAY_WHATSAPP__PHONE_NUMBER_ID", "1")
    monkeypatch.setenv("WARELAY_WHATSAPP__ACCESS_TOKEN", "t")
    result = subprocess.run(
        [sys.executable, "-m", "warelay.cli", "worker"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 2
    assert "APP_SECRET" in result.stderr


async def test_send_goes_through_the_outbox(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        env = {**os.environ, **settings_env(stack.settings)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "warelay.cli",
            "send",
            "--to",
            "15551270001",
            "**Hello** from the shop",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        assert out.decode().split(": ")[-1].strip() in {"accepted", "sent", "delivered", "read"}
        texts = [m.text for m in stack.simulator.messages_to("15551270001")]
        assert texts == ["*Hello* from the shop"]
        conversations = (await stack.api("/api/v1/conversations", user="15551270001"))["items"]
        assert len(conversations) == 1


async def test_api_keys_from_the_cli_authorise_the_api(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        env = {**os.environ, **settings_env(stack.settings)}

        async def create(*scopes: str) -> str:
            args = [a for s in scopes for a in ("--scope", s)]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "warelay.cli",
                "keys",
                "create",
                *args,
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            return out.decode().strip().splitlines()[-1]

        admin_key = await create("admin")
        send_only = await create("messages:send")
        url = f"{stack.url}/api/v1/conversations"
        assert (
            await stack.http.get(url, headers={"Authorization": f"Bearer {admin_key}"})
        ).status_code == 200
        assert (await stack.http.get(url, headers={"x-api-key": admin_key})).status_code == 200
        assert (await stack.http.get(url, headers={"x-api-key": send_only})).status_code == 403
        assert (await stack.http.get(url, headers={"x-api-key": "wrl_forged"})).status_code == 401
        assert (
            await stack.http.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        ).status_code == 200
