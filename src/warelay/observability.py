"""Logs and metrics.

Logs: one named logger per stage (``warelay.webhooks``, ``warelay.inbox``, ``warelay.worker``,
``warelay.sender``, ``warelay.agents``, …), the provider message id on every line about a message,
message bodies and personal data only at DEBUG, optional JSON output. Secrets never reach a log
line: settings hold them as SecretStr and NumberInfo's repr leaves them out.

Metrics: Prometheus counters and histograms on a registry of their own (so several apps in one
test process do not collide), served at ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_CORRELATION = ("wamid", "conversation", "number", "work_item", "tenant")


class TextFormatter(logging.Formatter):
    """Human-readable lines, ending with the correlation ids (provider message id first) when known."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as one line of text."""
        line = super().format(record)
        ids = " ".join(f"{key}={getattr(record, key)}" for key in _CORRELATION if hasattr(record, key))
        return f"{line} [{ids}]" if ids else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` correlation ids."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CORRELATION:
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure_logging(level: str = "INFO", *, json_output: bool = False) -> None:
    """Set up warelay's log output (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_output
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("warelay")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # httpx logs every request at INFO with full URLs; keep it quiet unless debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


class Metrics:
    """warelay's Prometheus metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.webhooks = Counter(
            "warelay_webhook_requests", "Webhook requests by outcome", ["outcome"], registry=r
        )
        self.inbound = Counter(
            "warelay_inbound_messages", "Inbound messages stored, by type", ["type"], registry=r
        )
        self.duplicates = Counter(
            "warelay_inbound_duplicates", "Redelivered inbound messages skipped", registry=r
        )
        self.statuses = Counter(
            "warelay_status_updates", "Delivery receipts received, by status", ["status"], registry=r
        )
        self.outbound = Counter(
            "warelay_outbound_messages",
            "Outbound messages by type and result",
            ["type", "result"],
            registry=r,
        )
        self.agent_latency = Histogram(
            "warelay_agent_latency_seconds",
            "Time the agent took per turn",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.send_latency = Histogram(
            "warelay_send_latency_seconds",
            "Time a Graph send call took",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.retries = Counter("warelay_retries", "Work items retried, by kind", ["kind"], registry=r)
        self.dead_letters = Counter(
            "warelay_dead_letters", "Work items dead-lettered, by kind", ["kind"], registry=r
        )
        self.queue_depth = Gauge(
            "warelay_queue_depth", "Unfinished work items, by kind", ["kind"], registry=r
        )
        self.inflight = Gauge(
            "warelay_inflight", "Work items being processed now, by kind", ["kind"], registry=r
        )
