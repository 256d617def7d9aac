"""Fixtures of the media tests: a loopback S3-compatible server (moto) and a running simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from tests.integration.stack import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, free_port
from warelay.config import MediaS3Settings
from warelay.simulator.server import Simulator, SimulatorConfig, create_simulator_app

BUCKET = "warelay-media-test"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (real HTTP, S3's wire protocol), for the whole session."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def s3_settings(s3_endpoint: str) -> AsyncIterator[MediaS3Settings]:
    """Settings of a fresh, empty bucket on the loopback S3 server."""
    from aiobotocore.session import get_session

    settings = MediaS3Settings(
        bucket=BUCKET,
        endpoint_url=s3_endpoint,
        region="us-east-1",
        access_key_id=SecretStr("test-key"),
        secret_access_key=SecretStr("test-secret"),
        prefix="wa/",
    )
    async with get_session().create_client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
    ) as client:
        await client.create_bucket(Bucket=BUCKET)
        yield settings
        listed = await client.list_objects_v2(Bucket=BUCKET)
        for item in listed.get("Contents", []):
            await client.delete_object(Bucket=BUCKET, Key=item["Key"])
        await client.delete_bucket(Bucket=BUCKET)


@dataclass
class RunningSimulator:
    """A simulator served over loopback HTTP (Graph routes and media downloads)."""

    sim: Simulator
    url: str


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    """The simulator on a free loopback port; webhooks go nowhere (these tests call the hook directly)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sim = Simulator(
        SimulatorConfig(
            webhook_url=f"http://127.0.0.1:{free_port()}/webhooks/whatsapp",
            app_secret=APP_SECRET,
            access_token=ACCESS_TOKEN,
            phone_number_id=PHONE_NUMBER_ID,
            base_url=url,
            send_statuses=False,
        )
    )
    server = uvicorn.Server(
        uvicorn.Config(create_simulator_app(sim), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield RunningSimulator(sim, url)
    finally:
        server.should_exit = True
        await task
