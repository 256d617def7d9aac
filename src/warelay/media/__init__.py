"""Inbound media: fetched from the channel into a store, read for the agent, purged after retention.

Where it sits in the path: between the worker's claim and the agent (the ``prepare_turn`` hook of
:class:`warelay.inbox.worker.Services`). :mod:`.prepare` drives it; :mod:`.store` keeps files (a
local folder, or an S3-compatible bucket), :mod:`.extract` reads documents, :mod:`.transcribe`
turns voice notes into text, :mod:`.records` keeps the ``media_files`` rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from warelay.channels.base import Channel
from warelay.config import Settings
from warelay.media.prepare import MediaPreparer
from warelay.media.store import build_store
from warelay.media.transcribe import transcriber_from_settings
from warelay.storage.direct import Database

__all__ = ["MediaPreparer", "build_media"]


def build_media(settings: Settings, *, db: Database, channels: Mapping[str, Channel]) -> MediaPreparer:
    """The media stage the settings describe: its store, and a transcriber when one is configured."""
    media = settings.media
    return MediaPreparer(
        db=db,
        channels=channels,
        store=build_store(media),
        settings=media,
        transcriber=transcriber_from_settings(media.transcription, settings.llm),
    )
