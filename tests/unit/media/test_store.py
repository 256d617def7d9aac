"""Media stores: the local folder on disk, and the S3 store against moto's S3 server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.integration.stack import free_port
from warelay.config import MediaS3Settings, MediaSettings
from warelay.errors import ConfigError
from warelay.media.store import (
    LocalMediaStore,
    MediaMissingError,
    MediaStoreError,
    S3MediaStore,
    build_store,
    check_key,
)

KEY = "7/3/2026/12/07/3f2a9c.jpg"


async def test_local_store_round_trip(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path / "media")
    await store.put(KEY, b"\xff\xd8jpeg bytes", mime_type="image/jpeg")
    assert (tmp_path / "media" / KEY).read_bytes() == b"\xff\xd8jpeg bytes"
    assert await store.get(KEY) == b"\xff\xd8jpeg bytes"
    await store.put(KEY, b"replaced", mime_type="image/jpeg")  # a retried turn writes its file again
    assert await store.get(KEY) == b"replaced"
    assert [p.name for p in (tmp_path / "media" / KEY).parent.iterdir()] == ["3f2a9c.jpg"]  # no temp files


async def test_local_delete_removes_the_file_and_empty_folders(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path)
    await store.put(KEY, b"a", mime_type=None)
    await store.put("7/3/2026/12/08/other.pdf", b"b", mime_type=None)
    await store.delete(KEY)
    assert not (tmp_path / KEY).exists()
    assert not (tmp_path / "7/3/2026/12/07").exists()
    assert (tmp_path / "7/3/2026/12/08/other.pdf").exists()  # folders still in use stay
    await store.delete(KEY)  # deleting again is fine
    with pytest.raises(MediaMissingError):
        await store.get(KEY)


async def test_local_store_failures_are_store_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = LocalMediaStore(blocker)
    with pytest.raises(MediaStoreError) as info:
        await store.put(KEY, b"x", mime_type=None)
    assert not isinstance(info.value, MediaMissingError)


@pytest.mark.parametrize(
    "key", ["", "../etc/passwd", "/abs/file", "a//b", "a/../b", "a/./b", ".hidden", "a/b/", "a\\b", "é/x"]
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="invalid media storage key"):
        check_key(key)


async def test_s3_store_round_trip(s3_settings: MediaS3Settings) -> None:
    from aiobotocore.session import get_session

    store = S3MediaStore(s3_settings)
    try:
        await store.put(KEY, b"%PDF-1.4 bytes", mime_type="application/pdf")
        assert await store.get(KEY) == b"%PDF-1.4 bytes"
        async with get_session().create_client(
            "s3",
            endpoint_url=s3_settings.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test-key",
            aws_secret_access_key="test-secret",
        ) as client:
            head = await client.head_object(Bucket=s3_settings.bucket or "", Key=f"wa/{KEY}")
            assert head["ContentType"] == "application/pdf"
            assert head["ContentLength"] == len(b"%PDF-1.4 bytes")
        await store.delete(KEY)
        with pytest.raises(MediaMissingError):
            await store.get(KEY)
        await store.delete(KEY)  # S3 deletes are idempotent too
    finally:
        await store.aclose()


async def test_s3_store_unreachable_is_a_store_error() -> None:
    settings = MediaS3Settings(
        bucket="nowhere",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key_id=SecretStr("k"),
        secret_access_key=SecretStr("s"),
    )
    store = S3MediaStore(settings)
    try:
        with pytest.raises(MediaStoreError) as info:
            await store.put(KEY, b"x", mime_type=None)
    finally:
        await store.aclose()
    # The error's class only: botocore's own message would quote the request.
    assert str(info.value) == f"cannot store media object {KEY}: EndpointConnectionError"


async def test_s3_store_missing_bucket_is_a_store_error(s3_settings: MediaS3Settings) -> None:
    store = S3MediaStore(s3_settings.model_copy(update={"bucket": "no-such-bucket"}))
    try:
        with pytest.raises(MediaStoreError) as info:
            await store.put(KEY, b"x", mime_type=None)
    finally:
        await store.aclose()
    assert str(info.value) == f"cannot store media object wa/{KEY}: NoSuchBucket"


def test_build_store_picks_s3_when_a_bucket_is_set(tmp_path: Path) -> None:
    assert isinstance(build_store(MediaSettings(directory=tmp_path)), LocalMediaStore)
    s3 = build_store(MediaSettings(s3=MediaS3Settings(bucket="shop-media", region="eu-west-1")))
    assert isinstance(s3, S3MediaStore)
    assert s3.bucket == "shop-media"


def test_s3_store_needs_a_bucket() -> None:
    with pytest.raises(ConfigError, match="BUCKET"):
        S3MediaStore(MediaS3Settings())
