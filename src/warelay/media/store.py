"""Where fetched media files are kept: a local folder by default, or an S3-compatible bucket.

Keys are made by :mod:`warelay.media.prepare` from ids only (tenant, number, date, a hash of the
message id), never from a user's filename, and each store checks them again before touching a
path or an object. Both stores are idempotent: putting a key again replaces the file, deleting a
missing one succeeds, so a turn retried after a crash simply writes its file once more.

The S3 store uses aiobotocore (the ``warelay[s3]`` extra): asynchronous, on the aiohttp stack
warelay already runs, and maintained by aio-libs alongside botocore, so every S3-compatible
service botocore speaks to (AWS, MinIO, Ceph, R2, …) works through ``endpoint_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import SecretStr

from warelay.config import MediaS3Settings, MediaSettings
from warelay.errors import ConfigError, WarelayError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "LocalMediaStore",
    "MediaMissingError",
    "MediaStore",
    "MediaStoreError",
    "S3MediaStore",
    "build_store",
    "check_key",
]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}(/[A-Za-z0-9][A-Za-z0-9._-]{0,199}){0,9}")


class MediaStoreError(WarelayError):
    """The media store could not keep or return a file (disk full, bucket unreachable, …)."""


class MediaMissingError(MediaStoreError):
    """No file is stored under the key (removed by the purge, or by hand)."""


def check_key(key: str) -> str:
    """Return ``key`` when it is a safe relative key (segments of letters, digits, ``._-``); else raise."""
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid media storage key {key!r}")
    return key


class MediaStore(Protocol):
    """Keeps media files by key."""

    name: str  # recorded with every file, so a purge knows which store holds it

    async def put(self, key: str, data: bytes, *, mime_type: str | None) -> None:
        """Store ``data`` under ``key`` durably, replacing what was there."""
        ...

    async def get(self, key: str) -> bytes:
        """The file under ``key``; :class:`MediaMissingError` when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the file under ``key`` (a missing file is not an error)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class LocalMediaStore:
    """Files in a folder on this machine (fine for one host; use S3 when several hosts run workers)."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    def path(self, key: str) -> Path:
        """Where the file of ``key`` lives."""
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, *, mime_type: str | None) -> None:
        """Write to a temporary file, flush it to disk, then rename it into place (atomic)."""
        path = self.path(key)
        try:
            await asyncio.to_thread(_write_file, path, data)
        except OSError as exc:
            raise MediaStoreError(f"cannot write media file {key}: {exc.strerror or exc}") from exc

    async def get(self, key: str) -> bytes:
        """Read the file."""
        path = self.path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise MediaMissingError(f"no media file {key}") from exc
        except OSError as exc:
            raise MediaStoreError(f"cannot read media file {key}: {exc.strerror or exc}") from exc

    async def delete(self, key: str) -> None:
        """Remove the file and the folders it leaves empty."""
        path = self.path(key)
        try:
            await asyncio.to_thread(_remove_file, path, self.root)
        except OSError as exc:
            raise MediaStoreError(f"cannot delete media file {key}: {exc.strerror or exc}") from exc

    async def aclose(self) -> None:
        """Nothing to release."""


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with temp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _remove_file(path: Path, root: Path) -> None:
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:  # not empty (or already gone): the folders above are not empty either
            return
        parent = parent.parent


class S3MediaStore:
    """Objects in an S3-compatible bucket, through aiobotocore (the ``warelay[s3]`` extra)."""

    name = "s3"

    def __init__(self, settings: MediaS3Settings) -> None:
        if not settings.bucket:
            raise ConfigError("WARELAY_MEDIA__S3__BUCKET is required for the S3 media store")
        if importlib.util.find_spec("aiobotocore") is None:
            raise ConfigError(
                "WARELAY_MEDIA__S3__BUCKET is set but aiobotocore is not installed: pip install 'warelay[s3]'"
            )
        self._settings = settings
        self.bucket = settings.bucket
        self._client: S3Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    def _object(self, key: str) -> str:
        return f"{self._settings.prefix}{check_key(key)}"

    async def _s3(self) -> S3Client:
        # Created on first use: the client's connection pool belongs to the running event loop.
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    from aiobotocore.config import AioConfig
                    from aiobotocore.session import get_session

                    s = self._settings
                    self._client = await self._stack.enter_async_context(
                        get_session().create_client(
                            "s3",
                            endpoint_url=s.endpoint_url,
                            region_name=s.region,
                            aws_access_key_id=_secret(s.access_key_id),
                            aws_secret_access_key=_secret(s.secret_access_key),
                            config=AioConfig(retries={"max_attempts": 3, "mode": "standard"}),
                        )
                    )
        return self._client

    async def put(self, key: str, data: bytes, *, mime_type: str | None) -> None:
        """Upload the object."""
        name = self._object(key)
        client = await self._s3()
        try:
            await client.put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType=mime_type or "application/octet-stream"
            )
        except Exception as exc:  # botocore's ClientError, BotoCoreError and aiohttp's errors
            raise MediaStoreError(f"cannot store media object {name}: {_s3_reason(exc)}") from exc

    async def get(self, key: str) -> bytes:
        """Download the object."""
        name = self._object(key)
        client = await self._s3()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=name)
            async with response["Body"] as body:
                data: bytes = await body.read()
        except Exception as exc:
            if _s3_code(exc) in ("NoSuchKey", "404"):
                raise MediaMissingError(f"no media object {name}") from exc
            raise MediaStoreError(f"cannot read media object {name}: {_s3_reason(exc)}") from exc
        return data

    async def delete(self, key: str) -> None:
        """Delete the object (S3 answers success for a missing one)."""
        name = self._object(key)
        client = await self._s3()
        try:
            await client.delete_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            raise MediaStoreError(f"cannot delete media object {name}: {_s3_reason(exc)}") from exc

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._stack.aclose()
        self._client = None


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _s3_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _s3_reason(exc: Exception) -> str:
    # The error's code and class only: botocore messages can quote request details.
    return _s3_code(exc) or type(exc).__name__


def build_store(settings: MediaSettings) -> MediaStore:
    """The store the settings name: S3 when a bucket is set, else the local folder."""
    if settings.s3.bucket:
        return S3MediaStore(settings.s3)
    return LocalMediaStore(settings.directory)
