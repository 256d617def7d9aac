"""End to end through real HTTP: simulator → webhook → inbox → worker → agent → outbox → simulator."""

from __future__ import annotations

import asyncio
import json

import httpx
from sqlalchemy import ColumnElement, func, select

from tests.integration.stack import APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, Stack, run_stack
from warelay.channels.cloud.client import CloudChannel
from warelay.channels.cloud.webhook import sign
from warelay.storage.models import Message, WorkItem


async def _count(stack: Stack, *where: ColumnElement[bool]) -> int:
    async with stack.runtime.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Message).where(*where))).scalar_one())


async def test_text_answered_threaded_with_read_receipt_and_statuses(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        wamid = await stack.simulator.user_sends("15551230001", "hello there", name="Ada")
        texts = await stack.replies_to("15551230001", 1)
        assert texts == ["echo: hello there"]
        sent = stack.simulator.messages_to("15551230001")[0]
        assert sent.body["context"] == {"message_id": wamid}
        assert sent.body["to"] == "15551230001"
        reads = [r for r in stack.simulator.reads if r.message_id == wamid]
        assert reads
        assert reads[0].typing
        assert stack.simulator.rejected == []

        page = await stack.api("/api/v1/conversations", user="15551230001")
        assert len(page["items"]) == 1
        conversation = page["items"][0]
        assert conversation["id"].startswith(f"{PHONE_NUMBER_ID}_15551230001_")
        assert conversation["user_name"] == "Ada"
        assert conversation["is_active"] is True

        async def read_status() -> list[dict[str, object]]:
            return list((await stack.api(f"/api/v1/conversations/{conversation['id']}/messages"))["items"])

        for _ in range(100):
            messages = await read_status()
            if messages[-1]["status"] == "read":
                break
            await asyncio.sleep(0.05)
        assert [(m["direction"], m["type"]) for m in messages] == [("in", "text"), ("out", "text")]
        assert messages[0]["provider_message_id"] == wamid
        assert messages[1]["provider_message_id"] == sent.wamid
        assert messages[1]["status"] == "read"


async def test_redelivery_race_stores_once_and_answers_once(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        body, headers, wamid = stack.simulator.build_inbound("15551230002", "only once please")
        url = f"{stack.url}/webhooks/whatsapp"
        responses = await asyncio.gather(
            *(stack.http.post(url, content=body, headers=headers) for _ in range(20))
        )
        assert all(r.status_code == 200 for r in responses)
        assert sum(r.json()["received"] for r in responses) == 1
        await stack.replies_to("15551230002", 1)
        await asyncio.sleep(0.5)  # a second reply would have arrived by now
        assert len(stack.simulator.messages_to("15551230002")) == 1
        assert await _count(stack, Message.provider_message_id == wamid) == 1
        # And again after the turn is done (a redelivery days later): still one.
        again = await stack.http.post(url, content=body, headers=headers)
        assert again.json() == {"received": 0, "duplicates": 1}


async def test_order_within_a_conversation_and_no_blocking_across(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        sim = stack.simulator
        for i, delay in enumerate([0.4, 0.0, 0.2, 0.0, 0.1]):
            await sim.user_sends("15551230003", f"m{i} sleep:{delay}")
        await sim.user_sends("15551230004", "quick")
        quick = await stack.replies_to("15551230004", 1, timeout=5)
        assert quick == ["echo: quick"]
        # The quick user's reply did not wait for the slow conversation to finish.
        assert len(sim.messages_to("15551230003")) < 5
        slow = await stack.replies_to("15551230003", 5)
        assert [t.split()[1] for t in slow] == ["m0", "m1", "m2", "m3", "m4"]


async def test_work_beyond_what_the_workers_can_take_is_claimed_later(db_url: str) -> None:
    # One turn and one send at a time: most work cannot be handed over as it is created (the
    # offers are too small) and waits for a claim; all of it is answered once, in order.
    async with run_stack(db_url, worker={"agent_concurrency": 1, "send_concurrency": 1}) as stack:
        users = [f"1555123005{i}" for i in range(4)]
        for round_ in range(3):
            for user in users:
                await stack.simulator.user_sends(user, f"r{round_}")
        for user in users:
            replies = await stack.replies_to(user, 3)
            assert replies == ["echo: r0", "echo: r1", "echo: r2"]
        assert stack.simulator.rejected == []


async def test_transient_graph_errors_are_retried(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        stack.simulator.faults.fail_next(1, 429, 130429)
        stack.simulator.faults.fail_next(1, 500, 1)
        await stack.simulator.user_sends("15551230005", "retry me")
        assert await stack.replies_to("15551230005", 1) == ["echo: retry me"]


async def test_permanent_graph_error_marks_message_failed(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        stack.simulator.faults.fail_next(1, 400, 131026)
        await stack.simulator.user_sends("15551230006", "undeliverable")
        for _ in range(100):
            failures = (await stack.api("/api/v1/failures", kind="send"))["items"]
            if failures:
                break
            await asyncio.sleep(0.05)
        assert failures
        assert failures[0]["last_error"]["code"] == 131026
        conv = (await stack.api("/api/v1/conversations", user="15551230006"))["items"][0]
        messages = (await stack.api(f"/api/v1/conversations/{conv['id']}/messages"))["items"]
        assert messages[-1]["status"] == "failed"
        assert messages[-1]["error"]["code"] == 131026


async def test_agent_failures_retry_then_dead_letter_with_fallback(db_url: str) -> None:
    async with run_stack(db_url, worker={"max_attempts": 3}) as stack:
        await stack.simulator.user_sends("15551230007", "fail:2 then works")
        assert await stack.replies_to("15551230007", 1) == ["echo: fail:2 then works"]

        await stack.simulator.user_sends("15551230008", "never works")
        texts = await stack.replies_to("15551230008", 1)
        assert texts == [stack.settings.agent.fallback_text]
        failures = (await stack.api("/api/v1/failures", kind="turn"))["items"]
        assert len(failures) == 1
        assert failures[0]["attempts"] == 3
        assert "scripted permanent failure" in failures[0]["last_error"]["message"]


async def test_signature_checks_store_nothing(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        body, headers, _ = stack.simulator.build_inbound("15551230009", "signed?")
        url = f"{stack.url}/webhooks/whatsapp"
        missing = {k: v for k, v in headers.items() if k.lower() != "x-hub-signature-256"}
        assert (await stack.http.post(url, content=body, headers=missing)).status_code == 401
        wrong = {**missing, "X-Hub-Signature-256": sign(body, "not-the-secret")}
        assert (await stack.http.post(url, content=body, headers=wrong)).status_code == 403
        other_bytes = {**missing, "X-Hub-Signature-256": sign(body + b" ", APP_SECRET)}
        assert (await stack.http.post(url, content=body, headers=other_bytes)).status_code == 403
        assert await _count(stack) == 0


async def test_verification_handshake(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        for path in ("/webhooks/whatsapp", "/webhook", "/whatsapp/webhook", "/api/meta-webhook"):
            ok = await stack.http.get(
                f"{stack.url}{path}",
                params={
                    "hub.mode": "subscribe",
                    "hub.verify_token": VERIFY_TOKEN,
                    "hub.challenge": "1158201444",
                },
            )
            assert ok.status_code == 200
            assert ok.text == "1158201444"
            assert ok.headers["content-type"].startswith("text/plain")
        bad = await stack.http.get(
            f"{stack.url}/webhook",
            params={"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "x"},
        )
        assert bad.status_code == 403
        php_style = await stack.http.get(
            f"{stack.url}/webhook",
            params={"hub_mode": "subscribe", "hub_verify_token": VERIFY_TOKEN, "hub_challenge": "abc"},
        )
        assert php_style.text == "abc"


async def test_bad_input_gets_4xx_and_stores_nothing(db_url: str) -> None:
    async with run_stack(db_url, max_body_bytes=4096) as stack:
        url = f"{stack.url}/webhooks/whatsapp"

        async def post(raw: bytes, content_type: str = "application/json") -> httpx.Response:
            return await stack.http.post(
                url,
                content=raw,
                headers={"Content-Type": content_type, "X-Hub-Signature-256": sign(raw, APP_SECRET)},
            )

        assert (await post(b"{not json")).status_code == 400
        assert (await post(b"[1, 2]")).status_code == 400
        assert (await post(json.dumps({"object": "whatsapp_business_account"}).encode())).status_code == 400
        assert (await post(b'{"entry": []}', "text/plain")).status_code == 415
        big = json.dumps({"entry": [], "pad": "x" * 5000}).encode()
        assert (await post(big)).status_code == 413
        body, _headers, _ = stack.simulator.build_inbound("15551230010", "hi")
        payload = json.loads(body)
        del payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        broken = json.dumps(payload).encode()
        response = await post(broken)
        assert response.status_code == 200  # one bad message never breaks intake; it is skipped
        assert await _count(stack) == 0
        wrong_type = await stack.http.get(
            f"{stack.url}/api/v1/conversations",
            params={"limit": "lots"},
            headers={"Authorization": "Bearer test-admin-token-0123456789"},
        )
        assert wrong_type.status_code == 422
        no_key = await stack.http.get(f"{stack.url}/api/v1/conversations")
        assert no_key.status_code == 401


async def test_unknown_number_is_acknowledged_not_processed(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        sim = stack.simulator
        sim.add_number("999999999999999", "15559990000", "other-token", APP_SECRET, sim.config.webhook_url)
        await sim.user_sends("15551230011", "who are you", number_id="999999999999999")
        await asyncio.sleep(0.3)
        assert await _count(stack) == 0
        assert sim.messages_to("15551230011") == []


async def test_statuses_never_move_backwards(db_url: str) -> None:
    async with run_stack(db_url, sim={"send_statuses": False}) as stack:
        sim = stack.simulator
        await sim.user_sends("15551230012", "track me")
        await stack.replies_to("15551230012", 1)
        wamid = sim.messages_to("15551230012")[0].wamid
        await asyncio.sleep(0.2)

        def status_payload(status: str, ts: int) -> bytes:
            return json.dumps(
                {
                    "object": "whatsapp_business_account",
                    "entry": [
                        {
                            "id": "102290129340398",
                            "changes": [
                                {
                                    "field": "messages",
                                    "value": {
                                        "messaging_product": "whatsapp",
                                        "metadata": {
                                            "display_phone_number": "15550783881",
                                            "phone_number_id": PHONE_NUMBER_ID,
                                        },
                                        "statuses": [
                                            {
                                                "id": wamid,
                                                "status": status,
                                                "timestamp": str(ts),
                                                "recipient_id": "15551230012",
                                            }
                                        ],
                                    },
                                }
                            ],
                        }
                    ],
                }
            ).encode()

        for name, ts in (("read", 1700000003), ("delivered", 1700000002), ("sent", 1700000001)):
            raw = status_payload(name, ts)
            r = await stack.http.post(
                f"{stack.url}/webhooks/whatsapp",
                content=raw,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(raw, APP_SECRET)},
            )
            assert r.status_code == 200
        async with stack.runtime.engine.connect() as conn:
            status = (
                await conn.execute(select(Message.status).where(Message.provider_message_id == wamid))
            ).scalar()
        assert status == "read"


async def test_queue_is_empty_after_work(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await stack.simulator.user_sends("15551230013", "a")
        await stack.replies_to("15551230013", 1)
        await asyncio.sleep(0.2)
        async with stack.runtime.engine.connect() as conn:
            left = (await conn.execute(select(func.count()).select_from(WorkItem))).scalar_one()
        assert left == 0


async def test_acknowledgement_goes_first_when_configured(db_url: str) -> None:
    async with run_stack(db_url, agent={"acknowledgement": "One moment please…"}) as stack:
        wamid = await stack.simulator.user_sends("15551230014", "sleep:0.2 question")
        texts = await stack.replies_to("15551230014", 2)
        assert texts == ["One moment please…", "echo: sleep:0.2 question"]
        assert stack.simulator.messages_to("15551230014")[0].body["context"] == {"message_id": wamid}


async def test_expired_conversation_opens_a_new_one(db_url: str) -> None:
    async with run_stack(db_url, conversations={"expiry_hours": 0.5 / 3600}) as stack:
        await stack.simulator.user_sends("15551230015", "state:order/cart first")
        await stack.replies_to("15551230015", 1)
        first = (await stack.api("/api/v1/conversations", user="15551230015"))["items"]
        assert [(c["intent"], c["step"]) for c in first] == [("order", "cart")]
        await asyncio.sleep(0.7)
        await stack.simulator.user_sends("15551230015", "second")
        await stack.replies_to("15551230015", 2)
        conversations = (await stack.api("/api/v1/conversations", user="15551230015"))["items"]
        assert len(conversations) == 2
        newest, oldest = conversations
        assert newest["is_active"] is True
        assert newest["intent"] is None
        assert oldest["is_active"] is False
        assert oldest["id"] == first[0]["id"]


async def test_state_changes_keep_previous_intent_and_step(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await stack.simulator.user_sends("15551230016", "state:menu/browsing")
        await stack.simulator.user_sends("15551230016", "state:order/selecting")
        await stack.replies_to("15551230016", 2)
        conv = (await stack.api("/api/v1/conversations", user="15551230016"))["items"][0]
        assert (conv["intent"], conv["step"]) == ("order", "selecting")
        assert (conv["previous_intent"], conv["previous_step"]) == ("menu", "browsing")
        assert conv["context"] == {"last": "state:order/selecting"}


async def test_health_and_metrics(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await stack.simulator.user_sends("15551230017", "count me")
        await stack.replies_to("15551230017", 1)
        assert (await stack.http.get(f"{stack.url}/healthz")).json() == {"status": "ok"}
        assert (await stack.http.get(f"{stack.url}/readyz")).status_code == 200
        health = (await stack.http.get(f"{stack.url}/api/health")).json()
        assert health["success"] is True
        assert health["data"]["status"] == "healthy"
        metrics = (await stack.http.get(f"{stack.url}/metrics")).text
        assert 'warelay_inbound_messages_total{type="text"} 1.0' in metrics
        assert "warelay_agent_latency_seconds_count" in metrics
        assert 'warelay_outbound_messages_total{result="accepted",type="text"} 1.0' in metrics


async def test_paging_through_conversations(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        for i in range(5):
            await stack.simulator.user_sends(f"155512302{i:02d}", "hi")
        await stack.simulator.wait_for(lambda: len(stack.simulator.sent) >= 5)
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = await stack.api("/api/v1/conversations", **params)
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 5
        assert len(set(seen)) == 5
        bad = await stack.http.get(
            f"{stack.url}/api/v1/conversations",
            params={"cursor": "garbage!"},
            headers={"Authorization": "Bearer test-admin-token-0123456789"},
        )
        assert bad.status_code == 422
        missing = await stack.http.get(
            f"{stack.url}/api/v1/conversations/nope/messages",
            headers={"Authorization": "Bearer test-admin-token-0123456789"},
        )
        assert missing.status_code == 404


async def test_send_retries_exhausted_is_a_visible_failure(db_url: str) -> None:
    async with run_stack(db_url, outbound={"max_attempts": 2}) as stack:
        stack.simulator.faults.fail_next(2, 503, 2)
        await stack.simulator.user_sends("15551230030", "doomed reply")
        for _ in range(200):
            failures = (await stack.api("/api/v1/failures", kind="send"))["items"]
            if failures:
                break
            await asyncio.sleep(0.05)
        assert len(failures) == 1
        assert failures[0]["attempts"] == 2
        assert failures[0]["last_error"]["transient"] is True
        assert stack.simulator.messages_to("15551230030") == []


async def test_long_reply_is_split_in_order_and_only_the_first_part_threaded(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        sentence = "Kopi tubruk is brewed by pouring hot water straight onto fine grounds. "
        long_text = "🇮🇩 " + sentence * 70  # ~5,000 characters
        wamid = await stack.simulator.user_sends("15551230031", long_text)
        parts = await stack.replies_to("15551230031", 2)
        assert all(len(p) <= 4096 for p in parts)
        assert "".join(parts).replace(" ", "") == f"echo: {long_text}".strip().replace(" ", "")
        sent = stack.simulator.messages_to("15551230031")
        assert sent[0].body["context"] == {"message_id": wamid}
        assert "context" not in sent[1].body


class _PlainTextChannel(CloudChannel):
    """The Cloud channel, as a provider that can send neither buttons nor reactions."""

    unsupported = frozenset({"buttons", "reaction"})


async def test_rich_replies_a_channel_cannot_send_go_as_text_or_fail_visibly(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        stack.runtime.channels["cloud"] = _PlainTextChannel()  # type: ignore[index]
        await stack.simulator.user_sends("15551230099", "buttons:Hot,Iced react")
        texts = await stack.replies_to("15551230099", 2)
        assert texts == [
            "echo: buttons:Hot,Iced react",
            "Pick one\n\n1. Hot\n2. Iced\nReply with the number or the words.",
        ]
        assert stack.simulator.rejected == []
        for _ in range(100):  # the reaction has no text form: it fails, visibly
            failures = (await stack.api("/api/v1/failures", kind="send"))["items"]
            if failures:
                break
            await asyncio.sleep(0.05)
        assert "cannot send reaction messages" in failures[0]["last_error"]["message"]
