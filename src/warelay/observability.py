"""Logs and metrics.

Logs: one named logger per stage (``warelay.webhooks``, ``warelay.inbox``, ``warelay.worker``,
``warelay.sender``, ``warelay.agents``, …), the provider message id on every line about a message,
message bodies and personal data only at DEBUG, optional JSON output. Secrets never reach a log
line: settings hold them as SecretStr and NumberInfo's repr leaves them out.

Metrics: Prometheus counters and histograms on a registry of their own (so several apps in one
test process do not collide), served at ``/metrics``. The worker processes of ``serve
--worker-processes`` keep theirs in prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``,
set by the supervisor), and ``serve`` adds them to its own at every scrape: counters and
histograms summed over the processes (a restarted worker's counts stay), ``warelay_inflight``
summed over the live ones, the queue depth as ``serve`` reads it from the database.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

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
        self.turn_reruns = Counter(
            "warelay_turn_reruns",
            "Agent answers discarded because the user wrote again before they were sent (abort on newer)",
            registry=r,
        )
        self.queue_depth = Gauge(
            "warelay_queue_depth",
            "Unfinished work items, by kind",
            ["kind"],
            registry=r,
            multiprocess_mode="livemax",  # every process reads the same figure from the database
        )
        self.inflight = Gauge(
            "warelay_inflight",
            "Work items being processed now, by kind",
            ["kind"],
            registry=r,
            multiprocess_mode="livesum",
        )
        # What /metrics serves: this registry, plus the worker processes' files once serve has some.
        self.exposed = CollectorRegistry(auto_describe=False)
        self.exposed.register(_Merged(self.registry, None))

    def include_worker_processes(self, directory: Path) -> None:
        """Serve the metrics of the worker processes that keep theirs in ``directory`` too."""
        self.exposed = CollectorRegistry(auto_describe=False)
        workers = MultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]
        self.exposed.register(_Merged(self.registry, workers))


# Gauges whose worker-process values add to this process's; other gauges are this process's alone.
_SUMMED_GAUGES = frozenset({"warelay_inflight"})


class _Merged(Collector):
    """This process's metrics with the worker processes' added (see the module docstring)."""

    def __init__(self, own: CollectorRegistry, workers: MultiProcessCollector | None) -> None:
        self.own = own
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        families = {family.name: family for family in self.own.collect()}
        if self.workers is not None:
            for theirs in self.workers.collect():  # type: ignore[no-untyped-call]
                mine = families.get(theirs.name)
                if mine is None:
                    families[theirs.name] = theirs
                elif theirs.type != "gauge" or theirs.name in _SUMMED_GAUGES:
                    mine.samples = _summed(mine.samples, theirs.samples)
        yield from families.values()


def _summed(mine: list[Sample], theirs: Iterable[Sample]) -> list[Sample]:
    out = list(mine)
    where = {(sample.name, tuple(sorted(sample.labels.items()))): i for i, sample in enumerate(out)}
    for sample in theirs:
        if sample.name.endswith("_created"):  # multiprocess files keep no creation times
            continue
        key = (sample.name, tuple(sorted(sample.labels.items())))
        i = where.get(key)
        if i is None:
            where[key] = len(out)
            out.append(sample)
        else:
            out[i] = out[i]._replace(value=out[i].value + sample.value)
    return out
