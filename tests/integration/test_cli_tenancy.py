"""`warelay tenants`, `warelay numbers update|remove` and `warelay keys create --rate-limit` against a
real database; a key made by the CLI is limited by the API it calls."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.integration.stack import SECRET_KEY, run_stack, settings_env
from tests.integration.test_rate_limits import wait_for_a_fresh_window
from warelay.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner(env={"COLUMNS": "250"})
KEY_LINE = re.compile(r"^wrl_[A-Za-z0-9_-]{43}$")


@pytest.fixture
def cli_env(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in list(os.environ):
        if name.startswith("WARELAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WARELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("WARELAY_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("WARELAY_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("WARELAY_PUBLIC_URL", "https://relay.example.com")
    return sqlite_url


def test_tenants_add_list_remove(cli_env: str) -> None:
    added = runner.invoke(app, ["tenants", "add", "acme", "--name", "Acme Coffee"])
    assert added.exit_code == 0, added.output
    again = runner.invoke(app, ["tenants", "add", "acme"])
    assert again.exit_code == 1
    assert "already exists" in again.output
    for bad in ("Acme", "-acme", "acme_shop", "a" * 64):
        refused = runner.invoke(app, ["tenants", "add", "--", bad])
        assert refused.exit_code == 1, bad
        assert "invalid subdomain" in refused.output
    listed = runner.invoke(app, ["tenants", "list"])
    assert listed.exit_code == 0, listed.output
    assert "acme" in listed.stdout
    assert "Acme Coffee" in listed.stdout
    assert "Acme_shop" not in listed.stdout

    kept = runner.invoke(app, ["tenants", "remove", "acme"], input="n\n")
    assert kept.exit_code == 1
    assert "acme" in runner.invoke(app, ["tenants", "list"]).stdout
    removed = runner.invoke(app, ["tenants", "remove", "acme", "--yes"])
    assert removed.exit_code == 0, removed.output
    assert "acme" not in runner.invoke(app, ["tenants", "list"]).stdout
    missing = runner.invoke(app, ["tenants", "remove", "acme", "--yes"])
    assert missing.exit_code == 1
    assert "no tenant" in missing.output


def test_numbers_update_and_remove(cli_env: str) -> None:
    assert runner.invoke(app, ["tenants", "add", "acme"]).exit_code == 0
    added = runner.invoke(
        app,
        [
            "numbers", "add", "--tenant", "acme", "--phone-number-id", "800000001",
            "--access-token", "EAAG-first-secret", "--app-secret", "app-first-secret",
        ],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert (
        runner.invoke(app, ["agents", "add", "sales", "--kind", "knowledge", "--tenant", "acme"]).exit_code
        == 0
    )
    updated = runner.invoke(
        app,
        [
            "numbers", "update", "800000001", "--display-name", "Sales line", "--status", "inactive",
            "--display-phone-number", "+62 812-3456-7890", "--agent", "sales",
            "--access-token", "EAAG-second-secret",
        ],
    )  # fmt: skip
    assert updated.exit_code == 0, updated.output
    assert "https://relay.example.com/webhooks/whatsapp" in updated.stdout
    listed = runner.invoke(app, ["numbers", "list"])
    assert "Sales line" in listed.stdout
    assert "inactive" in listed.stdout
    assert "6281234567890" in listed.stdout
    assert "sales" in listed.stdout
    back = runner.invoke(app, ["numbers", "update", "800000001", "--default-agent"])
    assert back.exit_code == 0, back.output
    assert "(default)" in runner.invoke(app, ["numbers", "list"]).stdout
    for output in (added.output, updated.output, listed.output):
        assert "secret" not in output

    for args, message in (
        (["--status", "paused"], "status"),
        (["--api-version", "latest"], "api_version"),
        (["--agent", "nobody"], "no agent 'nobody'"),
        (["--agent", "sales", "--default-agent"], "exclude each other"),
    ):
        refused = runner.invoke(app, ["numbers", "update", "800000001", *args])
        assert refused.exit_code != 0, args
        assert message in refused.output, refused.output
    assert runner.invoke(app, ["numbers", "update", "800000099", "--display-name", "x"]).exit_code == 1

    assert runner.invoke(app, ["numbers", "remove", "800000001"], input="n\n").exit_code == 1
    assert "800000001" in runner.invoke(app, ["numbers", "list"]).stdout
    assert runner.invoke(app, ["numbers", "remove", "800000001", "--yes"]).exit_code == 0
    assert "800000001" not in runner.invoke(app, ["numbers", "list"]).stdout
    assert runner.invoke(app, ["numbers", "remove", "800000001", "--yes"]).exit_code == 1


def test_the_env_number_and_its_tenant_are_left_to_the_environment(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARELAY_WHATSAPP__PHONE_NUMBER_ID", "800000002")
    monkeypatch.setenv("WARELAY_WHATSAPP__TENANT", "kopi")
    assert runner.invoke(app, ["tenants", "add", "kopi"]).exit_code == 0
    for args in (
        ["tenants", "remove", "kopi", "--yes"],
        ["numbers", "update", "800000002", "--display-name", "x"],
        ["numbers", "remove", "800000002", "--yes"],
    ):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 1, args
        assert "WARELAY_WHATSAPP__" in refused.output
    assert "kopi" in runner.invoke(app, ["tenants", "list"]).stdout


def test_keys_create_prints_the_key_last_with_its_rate_limit(cli_env: str) -> None:
    assert runner.invoke(app, ["tenants", "add", "acme"]).exit_code == 0
    limited = runner.invoke(
        app, ["keys", "create", "--tenant", "acme", "--scope", "conversations:read", "--rate-limit", "2"]
    )
    assert limited.exit_code == 0, limited.output
    assert KEY_LINE.match(limited.stdout.splitlines()[-1])
    default = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--scope", "admin"])
    assert KEY_LINE.match(default.stdout.splitlines()[-1])
    unlimited = runner.invoke(app, ["keys", "create", "--scope", "admin", "--rate-limit", "0"])
    assert KEY_LINE.match(unlimited.stdout.splitlines()[-1])
    listed = runner.invoke(app, ["keys", "list"]).stdout
    rows = {line.split("│")[1].strip(): line for line in listed.splitlines() if line.count("│") > 5}
    assert "│ 2 " in rows["1"]
    assert "600 (default)" in rows["2"]
    assert "unlimited" in rows["3"]
    assert runner.invoke(app, ["keys", "create", "--scope", "admin", "--rate-limit", "-1"]).exit_code == 2


async def test_a_key_created_by_the_cli_is_held_to_its_limit(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        env = {**os.environ, **settings_env(stack.settings)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warelay.cli", "keys", "create", "--tenant", "default",
            "--scope", "conversations:read", "--rate-limit", "2",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        key = out.decode().strip().splitlines()[-1]
        await wait_for_a_fresh_window()
        codes = [
            (
                await stack.http.get(f"{stack.url}/api/v1/conversations", headers={"x-api-key": key})
            ).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 429, 429]
