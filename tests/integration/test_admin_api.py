"""The admin API against a live warelay on loopback, on SQLite and PostgreSQL: tenants, numbers,
agents and keys created, read, changed and removed; pages; refused input storing nothing; secrets
never answered nor logged and encrypted at rest; and every route refusing keys of other tenants."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from tests.integration.stack import ADMIN_TOKEN, PHONE_NUMBER_ID, Stack, run_stack
from warelay.storage.models import Agent, ApiKey, Number
from warelay.tenancy import create_key

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TENANTS = "/api/v1/tenants"


async def call(
    stack: Stack,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    """One request to warelay's API (as the platform admin unless other headers are given)."""
    return await stack.http.request(
        method, f"{stack.url}{path}", headers=ADMIN if headers is None else headers, json=json, params=params
    )


async def ok(stack: Stack, method: str, path: str, expected: int = 200, **kwargs: Any) -> Any:
    """A request that must answer ``expected``; its JSON body (None for 204)."""
    response = await call(stack, method, path, **kwargs)
    assert response.status_code == expected, f"{method} {path}: {response.status_code} {response.text}"
    return None if expected == 204 else response.json()


async def tenant_key(stack: Stack, tenant: str, *scopes: str) -> str:
    """A new key of ``tenant`` with ``scopes``, made through the API."""
    created = await ok(stack, "POST", f"{TENANTS}/{tenant}/keys", 201, json={"scopes": list(scopes)})
    return str(created["key"])


async def platform_key(stack: Stack, *scopes: str) -> str:
    """A new platform-wide key (no tenant), as `warelay keys create` without --tenant makes one."""
    _, key = await create_key(stack.runtime.engine, stack.runtime.box, tenant_id=None, scopes=scopes)
    return key


def number_body(phone_number_id: str, **fields: Any) -> dict[str, Any]:
    """A number as seed 001's form fills it in."""
    return {
        "phone_number_id": phone_number_id,
        "display_phone_number": "+1-555-010-" + phone_number_id[-4:],
        "display_name": "Support WhatsApp",
        "status": "active",
        "app_id": "1234567890",
        "app_secret": f"app-secret-{phone_number_id}",
        "business_id": "9876543210",
        "access_token": f"EAAG-token-{phone_number_id}",
        "verify_token": f"verify-{phone_number_id}",
        "api_version": "v20.0",
        **fields,
    }


async def all_pages(stack: Stack, path: str, limit: int, key: str) -> list[Any]:
    """Every item of a list, page by page; each page holds at most ``limit`` items."""
    items: list[Any] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = await ok(stack, "GET", path, params=params)
        assert len(page["items"]) <= limit
        items.extend(item[key] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# ------------------------------------------------------------------------------------------ tenants


async def test_tenants_are_created_listed_renamed_and_deleted(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        for sub in ("delta", "alpha", "echo", "bravo", "charlie"):
            created = await ok(stack, "POST", TENANTS, 201, json={"subdomain": sub, "name": sub.title()})
            assert created["subdomain"] == sub
            assert created["name"] == sub.title()
        # "default" is the env number's tenant, created at start.
        expected = ["alpha", "bravo", "charlie", "default", "delta", "echo"]
        assert await all_pages(stack, TENANTS, 2, "subdomain") == expected
        assert await all_pages(stack, TENANTS, 500, "subdomain") == expected

        default = await ok(stack, "GET", f"{TENANTS}/default")
        assert (default["numbers"], default["agents"]) == (1, 1)

        renamed = await ok(stack, "PATCH", f"{TENANTS}/alpha", json={"name": "Alpha Coffee"})
        assert renamed["name"] == "Alpha Coffee"
        assert (await ok(stack, "PATCH", f"{TENANTS}/alpha", json={}))["name"] == "Alpha Coffee"
        assert (await ok(stack, "PATCH", f"{TENANTS}/alpha", json={"name": None}))["name"] is None

        await ok(stack, "DELETE", f"{TENANTS}/echo", 204)
        await ok(stack, "GET", f"{TENANTS}/echo", 404)
        await ok(stack, "DELETE", f"{TENANTS}/echo", 404)
        await ok(stack, "PATCH", f"{TENANTS}/echo", 404, json={"name": "x"})
        assert "echo" not in await all_pages(stack, TENANTS, 50, "subdomain")


async def test_bad_tenant_input_is_refused_and_nothing_stored(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "acme"})
        before = await all_pages(stack, TENANTS, 50, "subdomain")
        for body in (
            {"subdomain": "Acme"},  # upper case
            {"subdomain": "-acme"},
            {"subdomain": "a" * 64},
            {"subdomain": "acme_shop"},
            {"subdomain": ""},
            {},
            {"subdomain": "fine", "name": ""},
            {"subdomain": "fine", "colour": "red"},  # unknown field
            ["fine"],
        ):
            response = await call(stack, "POST", TENANTS, json=body)
            assert response.status_code == 422, (body, response.text)
        assert (await call(stack, "POST", TENANTS, json={"subdomain": "acme"})).status_code == 409
        assert await all_pages(stack, TENANTS, 50, "subdomain") == before
        # The env number's tenant comes back at every start: deleting it is refused.
        response = await call(stack, "DELETE", f"{TENANTS}/default")
        assert response.status_code == 409
        assert "WARELAY_WHATSAPP__" in response.json()["detail"]
        for cursor in ("not-base64!", "WyJhIiwiYiJd", "WzFd"):  # garbage, two values, a number
            assert (await call(stack, "GET", TENANTS, params={"cursor": cursor})).status_code == 422
        assert (await call(stack, "GET", TENANTS, params={"limit": 0})).status_code == 422
        assert (await call(stack, "GET", TENANTS, params={"limit": 501})).status_code == 422


async def test_the_env_number_belongs_to_the_configured_tenant(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False, whatsapp={"tenant": "kopi"}) as stack:
        numbers = (await ok(stack, "GET", f"{TENANTS}/kopi/numbers"))["items"]
        assert [n["phone_number_id"] for n in numbers] == [PHONE_NUMBER_ID]
        assert numbers[0]["configured_by_env"] is True
        assert numbers[0]["answered_by"] == "default"
        await ok(stack, "GET", f"{TENANTS}/default", 404)
        # The env number is rewritten at every start: the API refuses to change or remove it.
        path = f"{TENANTS}/kopi/numbers/{PHONE_NUMBER_ID}"
        assert (await call(stack, "PATCH", path, json={"display_name": "x"})).status_code == 409
        assert (await call(stack, "DELETE", path)).status_code == 409
        assert (await ok(stack, "GET", path))["display_name"] is None


# ------------------------------------------------------------------------------------------ numbers


async def test_numbers_crud_with_write_only_secrets(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    async with run_stack(db_url, run_workers=False) as stack:

        async def remember(method: str, path: str, expected: int = 200, **kwargs: Any) -> Any:
            response = await call(stack, method, path, **kwargs)
            answers.append(response.text)
            assert response.status_code == expected, (
                f"{method} {path}: {response.status_code} {response.text}"
            )
            return None if expected == 204 else response.json()

        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "acme"})
        await ok(stack, "POST", f"{TENANTS}/acme/agents", 201, json={"name": "support", "kind": "knowledge"})
        path = f"{TENANTS}/acme/numbers"
        created = await remember("POST", path, 201, json=number_body("200000001", agent="support"))
        assert created == {
            **created,
            "tenant": "acme",
            "phone_number_id": "200000001",
            "display_phone_number": "15550100001",  # as Meta writes it
            "display_name": "Support WhatsApp",
            "status": "active",
            "agent": "support",
            "answered_by": "support",
            "app_id": "1234567890",
            "business_id": "9876543210",
            "api_version": "v20.0",
            "graph_url": "https://graph.facebook.com",
            "throughput_mps": 80,
            "app_secret_set": True,
            "access_token_set": True,
            "verify_token_set": True,
            "webhook_url": f"{stack.url}/webhooks/whatsapp",
            "configured_by_env": False,
        }
        assert not {"app_secret", "access_token", "verify_token"} & set(created)
        await remember("POST", path, 201, json=number_body("200000002"))
        await remember("POST", path, 201, json=number_body("200000003", status="inactive"))
        assert await all_pages(stack, path, 2, "phone_number_id") == ["200000001", "200000002", "200000003"]
        second = await remember("GET", f"{path}/200000002")
        assert (second["agent"], second["answered_by"]) == (None, "default")

        changed = await remember(
            "PATCH",
            f"{path}/200000001",
            json={
                "display_name": "Sales",
                "status": "inactive",
                "access_token": "EAAG-rotated",
                "agent": None,
            },
        )
        assert (changed["display_name"], changed["status"], changed["agent"]) == ("Sales", "inactive", None)
        assert changed["display_phone_number"] == "15550100001"  # untouched
        cleared = await remember("PATCH", f"{path}/200000001", json={"verify_token": None})
        assert cleared["verify_token_set"] is False
        assert cleared["app_secret_set"] is True

        # Encrypted at rest: nothing stored is the plain secret, and the box reads back what was sent.
        async with stack.runtime.engine.connect() as conn:
            row = (
                await conn.execute(select(Number.__table__).where(Number.phone_number_id == "200000001"))
            ).one()
            dump = " ".join(str(v) for v in (await conn.execute(text("SELECT * FROM numbers"))).all())
        box = stack.runtime.box
        assert box.decrypt_optional(row.access_token_enc) == "EAAG-rotated"
        assert box.decrypt_optional(row.app_secret_enc) == "app-secret-200000001"
        assert row.verify_token_enc is None
        for secret in ("EAAG-rotated", "app-secret-200000001", "EAAG-token-200000002", "verify-200000003"):
            assert secret not in dump

        await remember("DELETE", f"{path}/200000003", 204)
        await remember("GET", f"{path}/200000003", 404)
        await remember("DELETE", f"{path}/200000003", 404)
        await remember("PATCH", f"{path}/200000003", 404, json={"display_name": "x"})

    secrets = ("app-secret-2000", "EAAG-token-2000", "verify-2000", "EAAG-rotated")
    for answer in answers:
        assert not any(s in answer for s in secrets), answer
    assert not any(s in caplog.text for s in secrets)


async def test_bad_number_input_is_refused_and_nothing_stored(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "acme"})
        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "other"})
        path = f"{TENANTS}/acme/numbers"
        await ok(stack, "POST", path, 201, json=number_body("300000001"))
        bad_creates: list[dict[str, Any]] = [
            {k: v for k, v in number_body("300000002").items() if k != "access_token"},
            {k: v for k, v in number_body("300000002").items() if k != "app_secret"},
            number_body("300000002", access_token=""),
            number_body("300000002", app_secret="s" * 5000),
            number_body("300000002", api_version="20"),
            number_body("300000002", status="paused"),
            number_body("300000002", throughput_mps=0),
            number_body("300000002", display_phone_number="call me"),
            number_body("300000002", app_id="app-one"),
            number_body("+300000002"),
            number_body("300000002", graph_url="ftp://graph"),
            number_body("300000002", agent="nobody"),  # no such agent in the tenant
            number_body("300000002", colour="red"),
        ]
        for body in bad_creates:
            response = await call(stack, "POST", path, json=body)
            assert response.status_code == 422, (body, response.text)
            assert "s" * 50 not in response.text  # a refused secret is not echoed
        # A phone number id is registered once, in whichever tenant.
        for tenant in ("acme", "other"):
            response = await call(stack, "POST", f"{TENANTS}/{tenant}/numbers", json=number_body("300000001"))
            assert response.status_code == 409, response.text
        bad_updates: list[dict[str, Any]] = [
            {"access_token": None},
            {"app_secret": None},
            {"status": None},
            {"api_version": "latest"},
            {"agent": "nobody"},
            {"phone_number_id": "300000009"},  # the id names the number; it does not change
            {"tenant": "other"},
        ]
        before = await ok(stack, "GET", f"{path}/300000001")
        for body in bad_updates:
            response = await call(stack, "PATCH", f"{path}/300000001", json=body)
            assert response.status_code == 422, (body, response.text)
        assert await ok(stack, "GET", f"{path}/300000001") == before
        assert await all_pages(stack, path, 50, "phone_number_id") == ["300000001"]
        assert (await ok(stack, "GET", f"{TENANTS}/other/numbers"))["items"] == []


async def test_a_number_added_through_the_api_receives_and_answers(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "shop"})
        await ok(
            stack,
            "POST",
            f"{TENANTS}/shop/numbers",
            201,
            json=number_body("400000001", graph_url=stack.sim_url, throughput_mps=1000),
        )
        stack.simulator.add_number(
            "400000001",
            "15550104000",
            access_token="EAAG-token-400000001",
            app_secret="app-secret-400000001",
            webhook_url=f"{stack.url}/webhooks/whatsapp",
        )
        await stack.simulator.user_sends("15551112222", "hello shop", number_id="400000001")
        assert await stack.replies_to("15551112222", 1) == ["echo: hello shop"]
        assert [m.number_id for m in stack.simulator.messages_to("15551112222")] == ["400000001"]
        conversations = (await stack.api("/api/v1/conversations", number="400000001"))["items"]
        assert [c["tenant"] for c in conversations] == ["shop"]
        # Inactive: the number's traffic is no longer answered.
        await ok(stack, "PATCH", f"{TENANTS}/shop/numbers/400000001", json={"status": "inactive"})
        await stack.simulator.user_sends("15551112222", "anyone there?", number_id="400000001")
        messages = (await stack.api(f"/api/v1/conversations/{conversations[0]['id']}/messages"))["items"]
        assert [m["text"] for m in messages if m["direction"] == "in"] == ["hello shop"]


# ------------------------------------------------------------------------------------------ agents


async def test_agents_crud_with_validated_configuration(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "acme"})
        await ok(stack, "POST", f"{TENANTS}/acme/numbers", 201, json=number_body("500000001"))
        path = f"{TENANTS}/acme/agents"
        created = await ok(
            stack,
            "POST",
            path,
            201,
            json={
                "name": "support",
                "kind": "llm",
                "config": {
                    "model": "gpt-4o-mini",
                    "api_key": "sk-agent-secret",
                    "tools": ["buttons", "state"],
                },
                "numbers": ["500000001"],
            },
        )
        assert created["config"] == {
            "model": "gpt-4o-mini",
            "api_key": "********",
            "tools": ["buttons", "state"],
        }
        assert created["numbers"] == ["500000001"]
        assert created["default"] is False
        number = await ok(stack, "GET", f"{TENANTS}/acme/numbers/500000001")
        assert (number["agent"], number["answered_by"]) == ("support", "support")
        async with stack.runtime.engine.connect() as conn:
            stored = (await conn.execute(select(Agent.config).where(Agent.name == "support"))).scalar_one()
        assert "sk-agent-secret" not in str(stored)
        assert stack.runtime.box.decrypt(stored["api_key_enc"]) == "sk-agent-secret"

        for name in ("beta", "alpha", "gamma"):
            await ok(stack, "POST", path, 201, json={"name": name, "kind": "knowledge"})
        assert await all_pages(stack, path, 2, "name") == ["alpha", "beta", "gamma", "support"]

        changed = await ok(
            stack,
            "PATCH",
            f"{path}/support",
            json={"config": {"temperature": 0.1, "model": None}, "kind": "knowledge"},
        )
        assert changed["kind"] == "knowledge"
        assert changed["config"] == {"api_key": "********", "tools": ["buttons", "state"], "temperature": 0.1}

        await ok(stack, "DELETE", f"{path}/support", 204)
        await ok(stack, "GET", f"{path}/support", 404)
        number = await ok(stack, "GET", f"{TENANTS}/acme/numbers/500000001")
        assert (number["agent"], number["answered_by"]) == (None, "default")
        # The default agent answers every unlinked number: it stays.
        default = await call(stack, "DELETE", f"{TENANTS}/default/agents/default")
        assert default.status_code == 409
        assert (await ok(stack, "GET", f"{TENANTS}/default/agents/default"))["default"] is True


async def test_bad_agent_input_is_refused_and_nothing_stored(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "acme"})
        path = f"{TENANTS}/acme/agents"
        await ok(stack, "POST", path, 201, json={"name": "support", "kind": "knowledge"})
        for body in (
            {"name": "new", "kind": "no-such-kind"},
            {"name": "new", "kind": "knowledge", "config": {"temperature": 5}},
            {"name": "new", "kind": "knowledge", "config": {"colour": "red"}},
            {"name": "new", "kind": "knowledge", "numbers": [PHONE_NUMBER_ID]},  # another tenant's number
            {"name": "new", "kind": "knowledge", "numbers": ["999"]},
            {"name": "has space", "kind": "knowledge"},
            {"name": "new"},
        ):
            response = await call(stack, "POST", path, json=body)
            assert response.status_code == 422, (body, response.text)
        assert (await call(stack, "POST", path, json={"name": "support", "kind": "llm"})).status_code == 409
        assert await all_pages(stack, path, 50, "name") == ["support"]
        before = await ok(stack, "GET", f"{path}/support")
        bad_changes: list[dict[str, Any]] = [
            {"config": {"reply_language": "klingon"}},
            {"kind": None},
            {"kind": "no-such-kind"},
            {"numbers": [PHONE_NUMBER_ID]},
        ]
        for change in bad_changes:
            response = await call(stack, "PATCH", f"{path}/support", json=change)
            assert response.status_code == 422, (change, response.text)
        assert await ok(stack, "GET", f"{path}/support") == before
        await ok(stack, "PATCH", f"{path}/nobody", 404, json={"config": {}})
        await ok(stack, "DELETE", f"{path}/nobody", 404)


# ------------------------------------------------------------------------------------------ keys


async def test_keys_are_shown_once_listed_by_prefix_and_revoked_at_once(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "acme"})
        path = f"{TENANTS}/acme/keys"
        created = await ok(
            stack, "POST", path, 201, json={"name": "crm", "scopes": ["conversations:read", "messages:send"]}
        )
        key = created["key"]
        assert key.startswith(created["prefix"])
        assert created["scopes"] == ["conversations:read", "messages:send"]
        assert created["last_used_at"] is None
        for scopes in (["admin"], ["conversations:write"]):
            await ok(stack, "POST", path, 201, json={"scopes": scopes})
        listed = await call(stack, "GET", path)
        assert key not in listed.text
        assert all("key" not in item for item in listed.json()["items"])
        assert await all_pages(stack, path, 2, "id") == [created["id"], created["id"] + 1, created["id"] + 2]

        used = await call(stack, "GET", "/api/v1/conversations", headers={"x-api-key": key})
        assert used.status_code == 200, used.text
        assert (
            await call(stack, "GET", "/api/v1/conversations", headers={"Authorization": f"Bearer {key}"})
        ).status_code == 200
        assert (await ok(stack, "GET", f"{path}/{created['id']}"))["last_used_at"] is not None

        renamed = await ok(stack, "PATCH", f"{path}/{created['id']}", json={"name": "crm-eu"})
        assert renamed["name"] == "crm-eu"

        await ok(stack, "DELETE", f"{path}/{created['id']}", 204)
        # Revoked: refused at once in this process, although the key was just checked (and cached).
        assert (
            await call(stack, "GET", "/api/v1/conversations", headers={"x-api-key": key})
        ).status_code == 401
        revoked = await ok(stack, "GET", f"{path}/{created['id']}")
        await ok(stack, "DELETE", f"{path}/{created['id']}", 204)  # again: nothing changes
        assert (await ok(stack, "GET", f"{path}/{created['id']}"))["revoked_at"] == revoked["revoked_at"]
        await ok(stack, "DELETE", f"{path}/999999", 404)
        await ok(stack, "GET", f"{path}/{2**63}", 422)

        bad_keys: list[dict[str, Any]] = [
            {"scopes": []},
            {"scopes": ["root"]},
            {"scopes": ["admin"], "rate_limit_per_minute": -1},
            {"scopes": ["admin"], "key": "wrl_chosen"},
            {},
        ]
        for body in bad_keys:
            response = await call(stack, "POST", path, json=body)
            assert response.status_code == 422, (body, response.text)
        async with stack.runtime.engine.connect() as conn:
            assert len((await conn.execute(select(ApiKey.id))).all()) == 3


async def test_a_tenant_admin_key_manages_its_own_tenant_only(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        for sub in ("acme", "other"):
            await ok(stack, "POST", TENANTS, 201, json={"subdomain": sub})
        admin = {"x-api-key": await tenant_key(stack, "acme", "admin")}
        listed = await ok(stack, "GET", TENANTS, headers=admin)
        assert [t["subdomain"] for t in listed["items"]] == ["acme"]
        await ok(stack, "PATCH", f"{TENANTS}/acme", headers=admin, json={"name": "Acme"})
        await ok(stack, "POST", f"{TENANTS}/acme/numbers", 201, headers=admin, json=number_body("600000001"))
        await ok(
            stack,
            "POST",
            f"{TENANTS}/acme/agents",
            201,
            headers=admin,
            json={"name": "a", "kind": "knowledge"},
        )
        made = await ok(stack, "POST", f"{TENANTS}/acme/keys", 201, headers=admin, json={"scopes": ["admin"]})
        assert made["tenant"] == "acme"
        # What reaches beyond the tenant is the platform admin's.
        refused = [
            ("POST", TENANTS, {"subdomain": "mine"}),
            ("DELETE", f"{TENANTS}/acme", None),
            ("POST", f"{TENANTS}/acme/numbers", number_body("600000002", graph_url="http://10.0.0.1")),
            ("PATCH", f"{TENANTS}/acme/numbers/600000001", {"graph_url": "http://10.0.0.1"}),
            ("POST", f"{TENANTS}/acme/keys", {"scopes": ["messages:send"], "rate_limit_per_minute": 0}),
            ("PATCH", f"{TENANTS}/acme/keys/{made['id']}", {"rate_limit_per_minute": 0}),
        ]
        for method, path, body in refused:
            response = await call(stack, method, path, headers=admin, json=body)
            assert response.status_code == 403, (method, path, response.text)
        await ok(stack, "GET", f"{TENANTS}/mine", 404)
        await ok(stack, "GET", f"{TENANTS}/acme")
        await ok(stack, "GET", f"{TENANTS}/acme/numbers/600000002", 404)
        assert (await ok(stack, "GET", f"{TENANTS}/acme/keys/{made['id']}"))["rate_limit_per_minute"] is None


# ------------------------------------------------------------------------------------------ walls

# Every admin route, with a body that would succeed for the platform admin.
ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/api/v1/tenants", {"subdomain": "intruder"}),
    ("GET", "/api/v1/tenants", None),
    ("GET", "/api/v1/tenants/{subdomain}", None),
    ("PATCH", "/api/v1/tenants/{subdomain}", {"name": "owned"}),
    ("DELETE", "/api/v1/tenants/{subdomain}", None),
    ("POST", "/api/v1/tenants/{subdomain}/numbers", number_body("700000009")),
    ("GET", "/api/v1/tenants/{subdomain}/numbers", None),
    ("GET", "/api/v1/tenants/{subdomain}/numbers/{phone_number_id}", None),
    ("PATCH", "/api/v1/tenants/{subdomain}/numbers/{phone_number_id}", {"access_token": "EAAG-stolen"}),
    ("DELETE", "/api/v1/tenants/{subdomain}/numbers/{phone_number_id}", None),
    ("POST", "/api/v1/tenants/{subdomain}/agents", {"name": "spy", "kind": "knowledge"}),
    ("GET", "/api/v1/tenants/{subdomain}/agents", None),
    ("GET", "/api/v1/tenants/{subdomain}/agents/{name}", None),
    ("PATCH", "/api/v1/tenants/{subdomain}/agents/{name}", {"config": {"system_prompt": "leak"}}),
    ("DELETE", "/api/v1/tenants/{subdomain}/agents/{name}", None),
    ("POST", "/api/v1/tenants/{subdomain}/keys", {"scopes": ["admin"]}),
    ("GET", "/api/v1/tenants/{subdomain}/keys", None),
    ("GET", "/api/v1/tenants/{subdomain}/keys/{key_id}", None),
    ("PATCH", "/api/v1/tenants/{subdomain}/keys/{key_id}", {"name": "mine"}),
    ("DELETE", "/api/v1/tenants/{subdomain}/keys/{key_id}", None),
]


async def _victim_state(stack: Stack) -> list[Any]:
    """Everything tenant acme has, as the platform admin reads it."""
    base = f"{TENANTS}/acme"
    return [
        await ok(stack, "GET", base),
        await ok(stack, "GET", f"{base}/numbers"),
        await ok(stack, "GET", f"{base}/agents"),
        # Keys as they were made (using one records when, which is not a change to it).
        [
            {k: v for k, v in key.items() if k != "last_used_at"}
            for key in (await ok(stack, "GET", f"{base}/keys"))["items"]
        ],
        [t["subdomain"] for t in (await ok(stack, "GET", TENANTS))["items"]],
    ]


async def test_every_admin_route_refuses_other_tenants_and_anonymous_callers(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        schema = await ok(stack, "GET", "/openapi.json")
        served = {
            (method.upper(), path)
            for path, operations in schema["paths"].items()
            if path.startswith(TENANTS)
            for method in operations
        }
        assert served == {(method, path) for method, path, _ in ROUTES}, "a route is missing from ROUTES"

        for sub in ("acme", "other"):
            await ok(stack, "POST", TENANTS, 201, json={"subdomain": sub})
        await ok(stack, "POST", f"{TENANTS}/acme/numbers", 201, json=number_body("700000001"))
        await ok(stack, "POST", f"{TENANTS}/acme/agents", 201, json={"name": "support", "kind": "knowledge"})
        victim_key = await ok(stack, "POST", f"{TENANTS}/acme/keys", 201, json={"scopes": ["admin"]})
        values = {
            "subdomain": "acme",
            "phone_number_id": "700000001",
            "name": "support",
            "key_id": victim_key["id"],
        }

        callers: dict[str, dict[str, str]] = {
            "no key": {},
            "unknown key": {"x-api-key": "wrl_" + "x" * 43},
            "other tenant's admin key": {"x-api-key": await tenant_key(stack, "other", "admin")},
            "other tenant's admin key as bearer": {
                "Authorization": f"Bearer {await tenant_key(stack, 'other', 'admin')}"
            },
            "acme's key without admin": {
                "x-api-key": await tenant_key(
                    stack, "acme", "messages:send", "conversations:read", "conversations:write"
                )
            },
            "platform key without admin": {"x-api-key": await platform_key(stack, "conversations:read")},
        }
        before = await _victim_state(stack)
        for caller, headers in callers.items():
            for method, template, body in ROUTES:
                path = template.format(**values)
                response = await call(stack, method, path, headers=headers, json=body)
                if caller in ("no key", "unknown key"):
                    expected = {401}
                elif caller.startswith("other tenant's admin key") and path == TENANTS:
                    # Its own tenant's list (checked below), never a tenant of its own making.
                    expected = {200} if method == "GET" else {403}
                elif caller.startswith("other tenant's admin key"):
                    expected = {404}  # as if acme did not exist
                else:
                    expected = {403}
                assert response.status_code in expected, (caller, method, path, response.text)
                if caller.startswith("other tenant's admin key") and path == TENANTS and method == "GET":
                    assert [t["subdomain"] for t in response.json()["items"]] == ["other"]
                assert "acme" not in response.text or response.status_code == 404, (
                    caller,
                    path,
                    response.text,
                )
        assert await _victim_state(stack) == before
        # The victim's key still works: nobody revoked or renamed it.
        assert (
            await call(stack, "GET", f"{TENANTS}/acme", headers={"x-api-key": victim_key["key"]})
        ).status_code == 200


async def test_inspection_routes_never_show_another_tenants_conversations(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await stack.simulator.user_sends("15553334444", "hello")
        await stack.replies_to("15553334444", 1)
        conversation = (await stack.api("/api/v1/conversations"))["items"][0]
        await ok(stack, "POST", TENANTS, 201, json={"subdomain": "other"})
        own = {"x-api-key": await tenant_key(stack, "default", "conversations:read")}
        foreign = {"x-api-key": await tenant_key(stack, "other", "conversations:read", "admin")}
        paths = [
            "/api/v1/conversations",
            f"/api/v1/conversations/{conversation['id']}",
            f"/api/v1/conversations/{conversation['id']}/messages",
            "/api/v1/failures",
        ]
        for path in paths:
            mine = await call(stack, "GET", path, headers=own)
            assert mine.status_code == 200, mine.text
            theirs = await call(stack, "GET", path, headers=foreign)
            assert theirs.status_code in (200, 404), theirs.text
            if theirs.status_code == 200:
                assert theirs.json()["items"] == [], (path, theirs.text)
            assert "15553334444" not in theirs.text
            assert (await call(stack, "GET", path, headers={})).status_code == 401
        assert (await call(stack, "GET", paths[1], headers=foreign)).status_code == 404
        assert "15553334444" in (await call(stack, "GET", paths[0], headers=own)).text
