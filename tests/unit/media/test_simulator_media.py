"""The simulator's media side for tests: users sending files, and faults injected into media fetches."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.integration.stack import ACCESS_TOKEN, PHONE_NUMBER_ID
from tests.unit.media.conftest import RunningSimulator

AUTH = {"Authorization": f"Bearer {ACCESS_TOKEN}"}


async def test_a_user_file_is_served_like_metas_media(simulator: RunningSimulator) -> None:
    sim = simulator.sim
    media_id = sim.add_media(b"%PDF-1.4 doc", "application/pdf", number_id=PHONE_NUMBER_ID, filename="a.pdf")
    async with httpx.AsyncClient() as http:
        info = (await http.get(f"{simulator.url}/v23.0/{media_id}", headers=AUTH)).json()
        assert info["sha256"] == hashlib.sha256(b"%PDF-1.4 doc").hexdigest()
        assert info["file_size"] == len(b"%PDF-1.4 doc")
        assert (await http.get(info["url"], headers=AUTH)).content == b"%PDF-1.4 doc"
        assert (await http.get(info["url"])).status_code == 401  # the download needs the bearer too
    assert (sim.media_requests, sim.downloads) == (1, 1)


async def test_media_faults_through_the_control_api(simulator: RunningSimulator) -> None:
    sim = simulator.sim
    media_id = sim.add_media(b"abc", "image/jpeg", number_id=PHONE_NUMBER_ID)
    body = {
        "resolve": {"fail_next": {"http_status": 500, "code": 1, "count": 1}},
        "download": {"fail_next": {"http_status": 404, "code": 131052}},
        "corrupt": 1,
    }
    async with httpx.AsyncClient(base_url=simulator.url) as http:
        state = (await http.post("/_sim/media-faults", json=body)).json()
        assert len(state["resolve"]["queued"]) == 1
        assert len(state["download"]["queued"]) == 1
        assert state["corrupt"] == 1
        assert (await http.get(f"/v23.0/{media_id}", headers=AUTH)).status_code == 500
        url = (await http.get(f"/v23.0/{media_id}", headers=AUTH)).json()["url"]
        failed = await http.get(url, headers=AUTH)
        assert (failed.status_code, failed.json()["error"]["code"]) == (404, 131052)
        assert (await http.get(url, headers=AUTH)).content == b"ab\x9c"  # altered once
        assert (await http.get(url, headers=AUTH)).content == b"abc"

        bad = await http.post("/_sim/media-faults", json={"resolve": {"latency": 1}, "download": {"x": 1}})
        assert bad.status_code == 400
        assert sim.media_faults.latency == 0  # nothing applied from a body that was refused
        assert (await http.post("/_sim/media-faults", json={"corrupt": -1})).status_code == 400
        await http.post(
            "/_sim/media-faults", json={"resolve": {"fail_next": {"http_status": 500, "code": 1}}}
        )
        cleared = (await http.delete("/_sim/media-faults")).json()
        assert cleared["resolve"]["queued"] == []
        assert sim.media_faults.queued == 0


async def test_user_sends_media_checks_the_type(simulator: RunningSimulator) -> None:
    with pytest.raises(ValueError, match="media_type"):
        await simulator.sim.user_sends_media("15550001", "gif", b"x", "image/gif")
