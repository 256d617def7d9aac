"""The agent path: warelay's own CPU per turn around the model call, and the latency it adds.

Where it sits: the whole message path (webhook → inbox → worker → agent → outbox → Graph API →
status webhooks), measured per turn, with the agent framework call taken out. Every part is its own
process, as in ``bench/run.py`` (whose stack it reuses): ``warelay serve`` configured by ``WARELAY_*``
variables (durability at its defaults: SQLite WAL + ``synchronous=FULL``; mark-read and typing on;
bursts off), run through ``bench/agent_path_serve.py``, which registers instrumented subclasses of
the built-in ``llm`` and ``knowledge`` agents that record per turn the CPU and wall time of
``respond``, of the pydantic-ai ``Agent.run`` call (pydantic-ai + openai SDK + HTTP to the model) and
of knowledge retrieval; ``warelay simulator`` as the Graph API; ``bench/fake_llm.py`` as an
OpenAI-compatible model answering at once on loopback.

Turns run **one at a time**: the next webhook is posted once the previous reply reached the
simulator, its mark-read arrived and warelay took its sent/delivered/read status webhook, so nothing
else interleaves. Per turn:

- **process CPU**: CPU of every thread of ``warelay serve`` (``/proc/PID/task/*/schedstat``, ns) from
  just before the webhook is posted until the turn settled;
- **warelay's CPU around the model** = process CPU − the event loop thread's CPU from the call of
  ``Agent.run`` to its return (for the ``knowledge`` agent, which has no model and no framework, it is
  the process CPU);
- **latency added** = (reply accepted by the simulator − webhook posted) − wall time of ``Agent.run``
  (the model's answer and the framework included).

``python bench/agent_path.py [--agent llm|knowledge ...] [--turns N] [--warmup N] [--repeat N]
[--quick] [--profile auto|always|never] [--keep]`` writes ``bench/results/agent-path.json``
(``bench/results/quick/`` with ``--quick``); when the llm agent misses the target (CPU around the model
≤ 5 ms at p50), ``warelay serve`` runs the llm turns again under pyinstrument (``bench/profiled.py``)
and the top of the profile goes to ``bench/results/agent-path.profile.txt``.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.client
import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_path_serve import HTTP_FRONT, TURN_TASK
from analysis import Reply, percentiles, replies_from_chat
from loadgen import wa_id_of
from report import busy_seconds, machine_info, render_profile, target, wait_quiet
from run import (
    APP_SECRET,
    BENCH,
    DISPLAY_PHONE_NUMBER,
    FALLBACK_TEXT,
    PHONE_NUMBER_ID,
    RESULTS,
    ROOT,
    Scenario,
    Stack,
    database,
    llm_micro,
    questions,
    running_stack,
)
from warelay.simulator.server import Simulator, SimulatorConfig

Figures = dict[str, Any]

SERVE_WRAPPER = BENCH / "agent_path_serve.py"
TARGET_MS = 5.0
USERS = 20  # turns go round-robin over these users, so conversations have history (window 10)
USER_OFFSET = 300_000
POLL_S = 0.004  # how often the driver asks the simulator whether the turn settled
SETTLE_S = 0.01  # then a little longer, so that warelay's last bit of work lands in its turn
TURN_TIMEOUT_S = 30.0
MAX_TIMEOUTS = 3
IDLE_S = 6.0  # idle warelay for this long (more than one 5 s housekeeping tick) to see its background CPU
PROFILE_TURNS = 200
PROFILE_WARMUP = 20

AGENTS: dict[str, Scenario] = {
    "llm": Scenario(
        "agent-path-llm",
        "llm agent, the fake model answering at once on loopback, SQLite, one `warelay serve`, one turn at "
        "a time",
        "sqlite",
        "llm",
        llm_delay=0.0,
    ),
    "knowledge": Scenario(
        "agent-path-knowledge",
        "knowledge agent (no model, no framework), SQLite, one `warelay serve`, one turn at a time",
        "sqlite",
        "knowledge",
    ),
}

COUNTED = {
    "process_cpu_ms": "CPU (user + system) of every thread of the warelay serve process, from just before "
    "the webhook is posted until the turn settled (reply accepted by the simulator, mark-read received, the "
    "sent/delivered/read status webhook taken by warelay, then 10 ms more): webhook intake (signature, "
    "parse, durable insert, commit), hand-over, loading the turn (message, session, history), mark-read and "
    "typing call, the agent (knowledge retrieval, prompt, framework call), completing the turn (outbox "
    "rows, commit), the Graph send and its record, the status webhook (its own insert and commit); plus "
    "background work that fell into the window (the idle workers' 0.25 s claim polls, the 5 s "
    "housekeeping: see idle_background) and the instrumentation (instrumentation_overhead_ms)",
    "framework_window_cpu_ms": "CPU of warelay's event loop thread from the call of pydantic-ai's Agent.run "
    "to its return: pydantic-ai (its graph runs in anyio tasks), the openai SDK, aiohttp and the HTTP "
    "exchange with the model on loopback — and anything else the loop ran meanwhile. With one turn at a "
    "time that is mostly the turn's own mark-read + typing call, which the worker starts in a task of its "
    "own just before the agent and which is still waiting for the simulator when the framework call "
    "begins (attribution.mark_read_vs_framework)",
    "framework_cpu_ms": "framework_window_cpu_ms minus the CPU of the steps of warelay's noted stages (see "
    "where_the_cpu_goes) that began inside the window: the framework's CPU as subtracted (transport "
    "callbacks of other calls that landed in the window stay in it). framework_in_isolation measures the "
    "same call alone (bench/llm_micro.py) for comparison",
    "warelay_cpu_around_model_ms": "process_cpu_ms - framework_cpu_ms: the headline, checked against the "
    "5 ms target (knowledge agent: process_cpu_ms, there is no model)",
    "warelay_cpu_around_model_uncorrected_ms": "process_cpu_ms - framework_window_cpu_ms (everything in the "
    "window counted as the framework's): a lower bound",
    "agent_cpu_excl_framework_ms": "thread CPU of Agent.respond minus framework_cpu_ms, without the noted "
    "stages' steps that ran meanwhile: retrieval, prompt rendering, history conversion, the reply, notes",
    "retrieval_cpu_ms": "thread CPU during Retriever.search, without the noted stages' steps that ran "
    "meanwhile (part of agent_cpu_excl_framework_ms)",
    "outside_agent_cpu_ms": "process_cpu_ms minus agent_cpu_excl_framework_ms and framework_cpu_ms: the turn "
    "outside the agent (intake, hand-over, load, mark-read, commit, send, status webhook, other threads)",
    "where_the_cpu_goes": "bench/agent_path_serve.py wraps the coroutines of the path's stages (the webhook "
    "front WarelayApp.__call__; Batcher._handle, i.e. each group-commit transaction; the workers' claim "
    "loops, hand-overs (loading the turn or the send), TurnWorker._process and SendWorker._send; "
    "CloudChannel.mark_read) and notes the thread CPU of each of their steps (a stretch between two "
    "awaits; code they await inline is theirs, other tasks are not). Per turn the steps are summed by "
    "stage; the agent and the framework come from their windows; the rest is work in no noted stage: "
    "transport callbacks (uvicorn's request parsing, aiohttp's response parsing), the loop itself, "
    "warelay's tasks that are not wrapped (housekeeping; the small task around each mark-read call), "
    "other threads and garbage collection. calls_per_turn_mean: how often a stage ran per turn",
    "cpu_phase_*_ms": "the event loop thread's CPU (its clock read by the driver from schedstat and by "
    "warelay serve through thread_time: the same counter) split at the agent's call and return and at the "
    "arrival of the status webhook: webhook_to_agent (intake front, inbox transaction, hand-over, load, "
    "mark-read started), agent (Agent.respond's window, the framework included), agent_to_status_webhook "
    "(turn commit, Graph send, send commit), status_webhook (the sent/delivered/read webhook: front, "
    "inbox transaction, and the rest of the window)",
    "instrumentation_overhead_ms": "noted_steps times the cost of noting one step (calibrated when the "
    "wrapper starts): included in process_cpu_ms, not subtracted",
    "mark_read_wall_ms": "wall time of the mark-read + typing call (its CPU: where_the_cpu_goes)",
    "e2e_ms": "webhook posted (driver's clock) -> reply accepted by the simulator (its clock; same machine)",
    "framework_wall_ms": "wall time of Agent.run: the model's answer, the HTTP exchange and the framework",
    "latency_added_ms": "e2e_ms - framework_wall_ms: the latency warelay adds (knowledge agent: e2e_ms)",
    "latency_segments": "posted_to_agent_ms (intake, commit, hand-over, load), agent_to_framework_ms "
    "(retrieval, prompt), framework_to_agent_end_ms, agent_end_to_reply_ms (turn commit, send): the same "
    "machine clock in the driver, warelay and the simulator; ack_ms is the webhook's round trip",
    "not_counted": "the fake model's, the simulator's and the driver's own CPU (other processes); the "
    "framework's CPU and wall time (above); knowledge ingest and start-up; the warm-up turns",
}


# ---------------------------------------------------------------------------------------------- probes


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU nanoseconds so far of each live thread of ``pid`` (first field of its schedstat)."""
    out: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return out


def cpu_delta_ns(before: Mapping[int, int], after: Mapping[int, int]) -> tuple[int, int]:
    """CPU ns between two samples (threads born in between count whole), and how many threads ended."""
    spent = sum(ns - before.get(tid, 0) for tid, ns in after.items())
    return spent, sum(1 for tid in before if tid not in after)


class Client:
    """One keep-alive HTTP/1.1 connection to a loopback server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request; returns (status, body bytes). Reconnects once on a dropped connection."""
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=dict(headers or {}))
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")

    def close(self) -> None:
        """Drop the connection."""
        self.conn.close()


# ---------------------------------------------------------------------------------------------- driver


@dataclass(slots=True)
class Sent:
    """One turn as the driver saw it."""

    index: int
    user: int
    wamid: str
    text: str
    posted: float  # time.time() just before the POST
    ack_ms: float
    status: int
    cpu_ns: int  # warelay serve, all threads, from just before the POST until the turn settled
    threads_ended: int
    window_ms: float  # the turn's whole window: POST -> settled (+ SETTLE_S)
    settled: bool
    ended: float  # time.time() when the turn's window closed (the next one opens there)
    main_before_ns: int  # the event loop thread's CPU clock (schedstat) when the window opened
    main_after_ns: int  # and when it closed


def _settled(c: Mapping[str, int], sent: int, reads: int) -> bool:
    return (
        c["sent"] >= sent
        and c["reads"] >= reads
        and c["pending_statuses"] == 0
        and c["deliveries_in_flight"] == 0
        and c["statuses_delivered"] + c["webhook_failures"] >= c["statuses_produced"]
    )


class Driver:
    """Posts signed webhooks to warelay one turn at a time and samples its CPU around each turn."""

    def __init__(self, stack: Stack, *, tag_texts: bool) -> None:
        self.stack = stack
        self.pid = stack.warelay[0].pid
        self.tag_texts = tag_texts
        self.texts = questions()
        self.sim = Simulator(
            SimulatorConfig(
                webhook_url=f"http://127.0.0.1:{stack.warelay_port}/webhooks/whatsapp",
                app_secret=APP_SECRET,
                access_token="unused-by-the-driver",  # noqa: S106 - the driver never calls the Graph API
                phone_number_id=PHONE_NUMBER_ID,
                display_phone_number=DISPLAY_PHONE_NUMBER,
            )
        )
        self.webhook = Client(stack.warelay_port)
        self.control = Client(stack.sim_port)
        self.count = 0  # turns posted so far
        self.base = self.counts()

    def counts(self) -> dict[str, int]:
        """The simulator's counters."""
        status, body = self.control.request("GET", "/_sim/state")
        if status != 200:
            raise RuntimeError(f"the simulator answered {status} to /_sim/state")
        counts: dict[str, int] = json.loads(body)["counts"]
        return counts

    def turn(self) -> Sent:
        """Post the next message and wait until warelay answered it and took its status webhook."""
        i = self.count
        user, seq = i % USERS, i // USERS
        text = self.texts[(user * 7 + seq) % len(self.texts)]
        if self.tag_texts:
            text = f"{text} [u{user} m{seq}]"
        body, headers, wamid = self.sim.build_inbound(
            wa_id_of(USER_OFFSET, user), text, name=f"Bench User {user}"
        )
        before = thread_cpu_ns(self.pid)
        posted, clock = time.time(), time.perf_counter()
        status, _ = self.webhook.request("POST", "/webhooks/whatsapp", body, headers)
        ack_ms = (time.perf_counter() - clock) * 1000.0
        self.count += 1
        want_sent, want_reads = self.base["sent"] + self.count, self.base["reads"] + self.count
        deadline = clock + TURN_TIMEOUT_S
        settled = False
        while time.perf_counter() < deadline:
            if _settled(self.counts(), want_sent, want_reads):
                settled = True
                break
            time.sleep(POLL_S)
        time.sleep(SETTLE_S)
        after = thread_cpu_ns(self.pid)
        ended_at = time.time()
        window_ms = (time.perf_counter() - clock) * 1000.0
        spent, ended = cpu_delta_ns(before, after)
        return Sent(
            i,
            user,
            wamid,
            text,
            posted,
            ack_ms,
            status,
            spent,
            ended,
            window_ms,
            settled,
            ended_at,
            before.get(self.pid, 0),
            after.get(self.pid, 0),
        )

    def turns(self, n: int) -> list[Sent]:
        """``n`` turns, one after the other (gives up after a few turns that never settled)."""
        out: list[Sent] = []
        for _ in range(n):
            out.append(self.turn())
            if sum(1 for s in out if not s.settled) >= MAX_TIMEOUTS:
                raise RuntimeError(f"{MAX_TIMEOUTS} turns did not settle within {TURN_TIMEOUT_S:.0f}s")
        return out

    def replies(self) -> dict[str, list[Reply]]:
        """Every reply the simulator accepted, by the wamid it answers (``context.message_id``)."""
        out: dict[str, list[Reply]] = {}
        for user in range(min(USERS, self.count)):
            status, body = self.control.request("GET", f"/_sim/users/{wa_id_of(USER_OFFSET, user)}/chat")
            if status != 200:
                raise RuntimeError(f"the simulator answered {status} to a chat view")
            for reply in replies_from_chat(json.loads(body)):
                if reply.context_id is not None:
                    out.setdefault(reply.context_id, []).append(reply)
        return out

    def close(self) -> None:
        """Close both connections."""
        self.webhook.close()
        self.control.close()


# ---------------------------------------------------------------------------------------------- figures


def _ms(seconds: float) -> float:
    return seconds * 1000.0


Step = tuple[str, float, float]  # a stage's label, when the step began (Unix time), its thread CPU (s)
AGENT = "agent: respond, framework call excluded (retrieval, prompt, reply)"
FRAMEWORK = "agent framework call (pydantic-ai, openai SDK, HTTP to the model)"
UNATTRIBUTED = "not in a noted stage (transport callbacks: request parsing; the loop; other threads; GC)"


class Steps:
    """The stage steps warelay serve noted (in the order they ran), searchable by time."""

    def __init__(self, steps: Sequence[Sequence[Any]], calls: Sequence[Sequence[Any]]) -> None:
        self.steps: list[Step] = sorted(
            ((str(a), float(b), float(c)) for a, b, c in steps), key=lambda x: x[1]
        )
        self.starts = [step[1] for step in self.steps]
        self.calls = sorted(((str(a), float(b), float(c)) for a, b, c in calls), key=lambda x: x[1])
        self.call_starts = [call[1] for call in self.calls]

    def calls_within(self, start: float, end: float) -> dict[str, int]:
        """How many calls of each noted stage began in ``[start, end)``."""
        found: dict[str, int] = {}
        lo, hi = bisect.bisect_left(self.call_starts, start), bisect.bisect_left(self.call_starts, end)
        for label, _, _ in self.calls[lo:hi]:
            found[label] = found.get(label, 0) + 1
        return found

    def first_call(self, label: str, start: float, end: float) -> tuple[float, float] | None:
        """The first call of stage ``label`` in ``[start, end)``: when, and the loop thread CPU clock then."""
        lo, hi = bisect.bisect_left(self.call_starts, start), bisect.bisect_left(self.call_starts, end)
        return next(((at, cpu) for name, at, cpu in self.calls[lo:hi] if name == label), None)

    def within(self, start: float, end: float) -> list[Step]:
        """The steps that began in ``[start, end)``."""
        return self.steps[bisect.bisect_left(self.starts, start) : bisect.bisect_left(self.starts, end)]

    def cpu(self, windows: Sequence[tuple[float, float]], *, skip: str = TURN_TASK) -> float:
        """Thread CPU (s) of the steps that began inside ``windows``, those of stage ``skip`` left out."""
        return sum(cpu for a, b in windows for label, _, cpu in self.within(a, b) if label != skip)


def turn_figures(
    sent: Sent,
    records: Sequence[Mapping[str, Any]],
    reply: Reply | None,
    mark_read: Mapping[str, Any] | None,
    steps: Steps,
    overhead_s: float,
) -> tuple[Figures, dict[str, float]]:
    """One measured turn's figures (ms), and where its CPU went (ms by stage)."""
    framework_windows = [
        (float(r["framework_start"]), float(r["framework_end"])) for r in records if r["framework_calls"]
    ]
    respond_windows = [(float(r["respond_start"]), float(r["respond_end"])) for r in records]
    retrieval_windows = [
        (float(r["retrieval_start"]), float(r["retrieval_end"])) for r in records if r["retrieval_calls"]
    ]
    window_cpu = sum(float(r["framework_cpu"]) for r in records)
    # Other tasks that ran while the agent waited (the turn's mark-read above all) are warelay's work:
    # their noted steps come out of the agent's, the framework's and the retrieval's windows.
    framework_cpu = window_cpu - steps.cpu(framework_windows)
    respond_cpu = sum(float(r["respond_cpu"]) for r in records) - steps.cpu(respond_windows)
    retrieval_cpu = sum(float(r["retrieval_cpu"]) for r in records) - steps.cpu(retrieval_windows)
    framework_wall = sum(float(r["framework_wall"]) for r in records)
    process = sent.cpu_ns / 1e6
    where: dict[str, float] = {}
    in_turn = steps.within(sent.posted, sent.ended)
    for label, at, cpu in in_turn:
        if label == TURN_TASK and any(a <= at < b for a, b in respond_windows):
            continue  # the agent itself, should wait_for run it in the turn's task (Python 3.12+)
        where[label] = where.get(label, 0.0) + _ms(cpu)
    where[AGENT] = _ms(respond_cpu - framework_cpu)
    where[FRAMEWORK] = _ms(framework_cpu)
    where[UNATTRIBUTED] = process - sum(where.values())
    row: Figures = {
        "process_cpu_ms": process,
        "framework_window_cpu_ms": _ms(window_cpu),
        "framework_cpu_ms": _ms(framework_cpu),
        "warelay_cpu_around_model_ms": process - _ms(framework_cpu),
        "warelay_cpu_around_model_uncorrected_ms": process - _ms(window_cpu),
        "agent_cpu_excl_framework_ms": _ms(respond_cpu - framework_cpu),
        "retrieval_cpu_ms": _ms(retrieval_cpu),
        "outside_agent_cpu_ms": process - _ms(respond_cpu),
        "noted_steps": float(len(in_turn)),
        "instrumentation_overhead_ms": _ms(len(in_turn) * overhead_s),
        "ack_ms": sent.ack_ms,
        "turn_window_ms": sent.window_ms,
    }
    if records:
        # The loop thread's CPU by phase of the turn (its CPU clock read by warelay serve and the driver).
        first, last = records[0], records[-1]
        row["cpu_phase_webhook_to_agent_ms"] = (
            _ms(float(first["respond_thread_cpu_start"])) - sent.main_before_ns / 1e6
        )
        row["cpu_phase_agent_ms"] = _ms(
            float(last["respond_thread_cpu_end"]) - float(first["respond_thread_cpu_start"])
        )
        status = steps.first_call(HTTP_FRONT, reply.at, sent.ended) if reply is not None else None
        if status is not None:
            row["cpu_phase_agent_to_status_webhook_ms"] = _ms(
                status[1] - float(last["respond_thread_cpu_end"])
            )
            row["cpu_phase_status_webhook_ms"] = sent.main_after_ns / 1e6 - _ms(status[1])
    if mark_read is not None:
        row["mark_read_wall_ms"] = _ms(float(mark_read["end"]) - float(mark_read["start"]))
    if reply is not None:
        e2e = _ms(reply.at - sent.posted)
        row["e2e_ms"] = e2e
        row["framework_wall_ms"] = _ms(framework_wall)
        row["latency_added_ms"] = e2e - _ms(framework_wall)
    if records and reply is not None:
        first, last = records[0], records[-1]
        # Where the wall time goes (same machine clock in the driver, warelay and the simulator).
        row["posted_to_agent_ms"] = _ms(float(first["respond_start"]) - sent.posted)
        row["retrieval_wall_ms"] = _ms(sum(float(r["retrieval_wall"]) for r in records))
        if float(first["framework_start"]):
            row["agent_to_framework_ms"] = _ms(
                float(first["framework_start"]) - float(first["respond_start"])
            )
            row["framework_to_agent_end_ms"] = _ms(float(last["respond_end"]) - float(last["framework_end"]))
        row["agent_end_to_reply_ms"] = _ms(reply.at - float(last["respond_end"]))
    return row, where


def summarise(rows: Sequence[Figures]) -> Figures:
    """p50/p90/p99/max/mean of every per-turn figure."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: percentiles([float(row[k]) for row in rows if k in row]) for k in keys}


# ---------------------------------------------------------------------------------------------- one run


@dataclass
class Observed:
    """What the driver saw in one stack."""

    warmup: list[Sent]
    measured: list[Sent]
    replies: dict[str, list[Reply]]
    idle: Figures
    window: Figures


def drive(stack: Stack, *, agent: str, turns: int, warmup: int, idle_s: float) -> Observed:
    """Warm up, watch warelay idle, then the measured turns with whole-process cross-checks."""
    driver = Driver(stack, tag_texts=agent == "llm")
    try:
        print(f"   {agent}: {warmup} warm-up turns", flush=True)
        warm = driver.turns(warmup)
        before, t0 = thread_cpu_ns(driver.pid), time.perf_counter()
        time.sleep(idle_s)
        idle_ns, _ = cpu_delta_ns(before, thread_cpu_ns(driver.pid))
        idle_ms_per_s = idle_ns / 1e6 / (time.perf_counter() - t0)
        print(f"   {agent}: {turns} measured turns, one at a time", flush=True)
        serve = stack.warelay[0].ps
        times0 = serve.cpu_times()
        cpu0, busy0, own0, t1 = stack.cpu(), busy_seconds(), time.process_time(), time.perf_counter()
        measured = driver.turns(turns)
        cpu1, busy1, own1, t2 = stack.cpu(), busy_seconds(), time.process_time(), time.perf_counter()
        times1 = serve.cpu_times()
        replies = driver.replies()
    finally:
        driver.close()
    cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 3) for k in cpu1}
    busy = busy1[0] - busy0[0]
    ours = sum(v for k, v in cpu.items() if ": " not in k) + (own1 - own0)
    window: Figures = {
        "seconds": round(t2 - t1, 3),
        "cpu_s_by_process": cpu,
        "driver_cpu_s": round(own1 - own0, 3),
        # In the kernel: socket I/O, epoll, and the fsync of each SQLite commit (synchronous=FULL).
        "warelay_serve_user_s": round(times1.user - times0.user, 3),
        "warelay_serve_system_s": round(times1.system - times0.system, 3),
        "machine_busy_fraction": round(busy / max(1e-9, busy1[1] - busy0[1]), 3),
        "other_processes_cpu_s": round(max(0.0, busy - ours), 3),
    }
    idle = {
        "seconds": idle_s,
        "warelay_cpu_ms_per_s": round(idle_ms_per_s, 3),
        "note": "warelay serve's CPU while nothing was sent (its idle workers poll the queue every 0.25 s; "
        "housekeeping every 5 s): per turn, about this rate times turn_window_ms falls into process_cpu_ms",
    }
    return Observed(warm, measured, replies, idle, window)


def measure(agent: str, *, turns: int, warmup: int, keep: bool) -> Figures:
    """One fresh stack (database, simulator, fake model, instrumented warelay serve) for one agent."""
    scenario = AGENTS[agent]
    workdir = Path(tempfile.mkdtemp(prefix=f"warelay-bench-{scenario.name}."))
    try:
        with (
            database(scenario, workdir, None, "run") as (db_url, _, db_info),
            running_stack(
                scenario, db_url, workdir, profile=False, pg_dsn=None, pg_pid=None, wrapper=SERVE_WRAPPER
            ) as stack,
        ):
            seen = drive(stack, agent=agent, turns=turns, warmup=warmup, idle_s=IDLE_S)
            peak = stack.warelay[0].peak_rss_kb()
        turns_file = workdir / "agent-path-turns.json"
        if not turns_file.exists():
            raise RuntimeError(f"warelay serve wrote no records ({turns_file}); see {workdir}/logs")
        recorded: dict[str, Any] = json.loads(turns_file.read_text())
        exit_codes = {p.name: p.popen.returncode for p in stack.procs()}
        fake = workdir / "fake-llm.json"
        fake_stats = json.loads(fake.read_text()) if fake.exists() else None
    finally:
        if keep:
            print(f"   work files kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return analyse(
        agent,
        seen,
        recorded["turns"],
        recorded["mark_reads"],
        Steps(recorded["stage_steps"], recorded["stage_calls"]),
        float(recorded["step_overhead_s"]),
        db_info,
        peak,
        exit_codes,
        fake_stats,
    )


def analyse(
    agent: str,
    seen: Observed,
    records: Sequence[Mapping[str, Any]],
    mark_reads: Mapping[str, Mapping[str, Any]],
    steps: Steps,
    overhead_s: float,
    db_info: Figures,
    peak: Mapping[str, int],
    exit_codes: Mapping[str, int | None],
    fake_stats: Figures | None,
) -> Figures:
    """The figures of one agent's run."""
    by_wamid: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_wamid.setdefault(str(r["wamid"]), []).append(r)
    rows: list[Figures] = []
    wheres: list[dict[str, float]] = []
    unanswered = duplicated = fallback = mismatched = failed_calls = 0
    no_record = 0
    mark_read = dict.fromkeys(("ended_before_it", "overlapped_it", "started_after_it", "not_recorded"), 0)
    for s in seen.measured:
        replies = seen.replies.get(s.wamid, [])
        reply = min(replies, key=lambda r: r.at) if replies else None
        unanswered += reply is None
        duplicated += len(replies) > 1
        if reply is not None and reply.text == FALLBACK_TEXT:
            fallback += 1
        elif reply is not None and agent == "llm" and reply.text != f"echo: {s.text}":
            mismatched += 1
        mine = by_wamid.get(s.wamid, [])
        no_record += not mine
        failed_calls += sum(1 for r in mine if r["failed"])
        marked = mark_reads.get(s.wamid)
        row, where = turn_figures(s, mine, reply, marked, steps, overhead_s)
        rows.append(row)
        wheres.append(where)
        if mine and float(mine[0]["framework_start"]):
            start, end = float(mine[0]["framework_start"]), float(mine[-1]["framework_end"])
            if marked is None:
                mark_read["not_recorded"] += 1
            elif marked["end"] <= start:
                mark_read["ended_before_it"] += 1
            elif marked["start"] >= end:
                mark_read["started_after_it"] += 1
            else:
                mark_read["overlapped_it"] += 1
    stats = summarise(rows)
    labels = sorted({k for w in wheres for k in w}, key=lambda k: -sum(w.get(k, 0.0) for w in wheres))
    calls = [steps.calls_within(s.posted, s.ended) for s in seen.measured]
    where_cpu = {
        k: {
            "p50": percentiles([w.get(k, 0.0) for w in wheres])["p50"],
            "mean": percentiles([w.get(k, 0.0) for w in wheres])["mean"],
            "calls_per_turn_mean": round(sum(c.get(k, 0) for c in calls) / max(1, len(calls)), 2)
            if any(k in c for c in calls)
            else None,
        }
        for k in labels
    }
    framework_calls = sum(int(r["framework_calls"]) for s in seen.measured for r in by_wamid.get(s.wamid, []))
    n = len(seen.measured)
    cpu = seen.window["cpu_s_by_process"]
    serve_s = float(cpu.get("warelay serve", 0.0))
    around = stats["warelay_cpu_around_model_ms"]
    latency = stats.get("latency_added_ms", percentiles([]))
    return {
        "agent": agent,
        "description": AGENTS[agent].description,
        "turns": n,
        "warmup_turns": len(seen.warmup),
        "headline": {
            "warelay_cpu_around_model_ms_p50": around["p50"],
            "warelay_cpu_around_model_ms_p99": around["p99"],
            "warelay_cpu_around_model_uncorrected_ms_p50": stats["warelay_cpu_around_model_uncorrected_ms"][
                "p50"
            ],
            "latency_added_ms_p50": latency["p50"],
            "latency_added_ms_p99": latency["p99"],
            "process_cpu_ms_p50": stats["process_cpu_ms"]["p50"],
            "framework_cpu_ms_p50": stats["framework_cpu_ms"]["p50"],
            "framework_wall_ms_p50": stats.get("framework_wall_ms", percentiles([]))["p50"],
            "e2e_ms_p50": stats.get("e2e_ms", percentiles([]))["p50"],
        },
        "per_turn_ms": stats,
        "where_the_cpu_goes_ms_per_turn": where_cpu,
        "cross_check": {
            "psutil_warelay_serve_cpu_ms_per_turn": round(serve_s / max(1, n) * 1000, 3),
            "schedstat_process_cpu_ms_per_turn": stats["process_cpu_ms"]["mean"],
            "psutil_event_loop_thread_ms_per_turn": round(
                float(cpu.get("warelay serve: event loop thread", 0.0)) / max(1, n) * 1000, 3
            ),
            "psutil_other_threads_ms_per_turn": round(
                float(cpu.get("warelay serve: other threads", 0.0)) / max(1, n) * 1000, 3
            ),
            "threads_ended_during_turns": sum(s.threads_ended for s in seen.measured),
            "psutil_user_ms_per_turn": round(
                float(seen.window["warelay_serve_user_s"]) / max(1, n) * 1000, 3
            ),
            "psutil_system_ms_per_turn": round(
                float(seen.window["warelay_serve_system_s"]) / max(1, n) * 1000, 3
            ),
            "note": "psutil reads /proc/PID/stat (10 ms ticks; threads that ended included) over the whole "
            "measured window; the per-turn figures read each live thread's schedstat (ns)",
        },
        "attribution": {
            "mark_read_vs_framework": mark_read if agent == "llm" else None,
            "note": "whether the turn's mark-read + typing call (started by the worker just before "
            "the agent) ended before the framework call began, overlapped it (then part of its CPU may be "
            "counted in framework_cpu_ms instead of warelay's), or began after it ended",
        },
        "idle_background": seen.idle,
        "window": seen.window,
        "correctness": {
            "unanswered": unanswered,
            "duplicated": duplicated,
            "fallback_replies": fallback,
            "mismatched_replies": mismatched if agent == "llm" else None,
            "turns_not_settled": sum(1 for s in seen.measured if not s.settled),
            "non_200_acks": sum(1 for s in seen.measured if s.status != 200),
            "turns_without_agent_record": no_record,
            "failed_agent_calls": failed_calls,
            "framework_calls": framework_calls if agent == "llm" else None,
        },
        "database": db_info,
        "peak_rss_mb": {k: round(v / 1024, 1) for k, v in peak.items()},
        "fake_llm": fake_stats,
        "exit_codes": dict(exit_codes),
    }


def framework_in_isolation(llm_runs: Sequence[Figures], turns: int, keep: bool) -> Figures:
    """The framework call measured alone (bench/llm_micro.py), beside its in-situ CPU in each run."""
    workdir = Path(tempfile.mkdtemp(prefix="warelay-bench-agent-path-micro."))
    (workdir / "logs").mkdir()
    print(f"   the framework call alone: bench/llm_micro.py, {turns} turns", flush=True)
    try:
        micro = llm_micro(workdir, turns)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "in_situ_framework_cpu_ms": [
            {"run": r["run"], "p50": r["per_turn_ms"]["framework_cpu_ms"]["p50"]} for r in llm_runs
        ],
        "alone_framework_openai_sdk_http_cpu_ms_per_turn": micro["pydantic_ai_openai_sdk_http"][
            "cpu_ms_per_turn"
        ],
        "alone_pydantic_ai_only_cpu_ms_per_turn": micro["pydantic_ai_function_model"]["cpu_ms_per_turn"],
        "note": "bench/llm_micro.py calls LLMAgent.respond one turn at a time in a process of its own (a "
        "fixed retriever), with the real OpenAI model class over HTTP to the fake model, and with "
        "pydantic-ai's FunctionModel (no HTTP): process CPU per turn, so its figure also holds the prompt "
        "rendering that the in-situ framework_cpu_ms leaves to warelay. Were the in-situ figure much larger "
        "than the alone one, the framework window would be holding warelay's work",
        "micro": micro,
    }


# ---------------------------------------------------------------------------------------------- profile


def profile_llm(out_dir: Path, missed: Sequence[str], keep: bool) -> Figures:
    """The llm turns again with ``warelay serve`` under pyinstrument (uninstrumented); save the profile."""
    scenario = AGENTS["llm"]
    workdir = Path(tempfile.mkdtemp(prefix="warelay-bench-agent-path-profile."))
    print(f"   profiling the llm agent ({PROFILE_TURNS} turns under pyinstrument)", flush=True)
    try:
        with (
            database(scenario, workdir, None, "profile") as (db_url, _, _),
            running_stack(scenario, db_url, workdir, profile=True, pg_dsn=None, pg_pid=None) as stack,
        ):
            driver = Driver(stack, tag_texts=True)
            try:
                driver.turns(PROFILE_WARMUP)
                clock = time.perf_counter()
                done = driver.turns(PROFILE_TURNS)
                elapsed = time.perf_counter() - clock
            finally:
                driver.close()
        cpu = sorted(s.cpu_ns / 1e6 for s in done)
        header = (
            "# pyinstrument profile of the agent path (llm agent, instant fake model): "
            f"{PROFILE_WARMUP} warm-up and {PROFILE_TURNS} turns one at a time, {elapsed:.1f} s\n"
            f"# why: missed {', '.join(missed) or '(none: --profile always)'}\n"
            f"# profiled run (slowed by sampling): warelay serve process CPU per turn p50 "
            f"{cpu[len(cpu) // 2]:.2f} ms (framework included)\n"
            "# Sampled wall time of warelay serve's main thread (the event loop), start-up included.\n"
            "# Turns run one at a time, so most of the wall time is the loop waiting (Runner.run [self]\n"
            "# and the selector: uvloop's C code) for the simulator's batched status webhook (20 ms\n"
            "# window) and the next turn. Under the framework call (pydantic-ai's Agent.run) are\n"
            "# pydantic-ai, the openai SDK and aiohttp, which the headline leaves out; everything else\n"
            "# on the loop is warelay's own time around the model. SQLite (synchronous=FULL) commits\n"
            "# run on the loop: their fsync shows as sampled wall time."
        )
        text = render_profile(stack.profile_sessions(), header)
        path = out_dir / "agent-path.profile.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return {
            "file": str(path.relative_to(ROOT)),
            "turns": PROFILE_TURNS,
            "why": list(missed),
            "note": "warelay serve ran under pyinstrument (bench/profiled.py), the agents uninstrumented",
        }
    finally:
        if keep:
            print(f"   work files kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- main


def parameters(turns: int, warmup: int, repeat: int) -> Figures:
    """The workload and the settings warelay ran with."""
    return {
        "turns_per_run": turns,
        "warmup_turns_per_run": warmup,
        "runs_per_agent": repeat,
        "driving": "one turn at a time: the next webhook once the previous reply reached the simulator, its "
        "mark-read arrived and warelay took its status webhook (the driver polls the simulator's "
        f"/_sim/state every {POLL_S * 1000:g} ms, then waits {SETTLE_S * 1000:g} ms)",
        "users": USERS,
        "messages": "the demo shop's FAQ questions and a few it cannot answer, round-robin over the users "
        "(the llm agent's texts tagged '[u… m…]', so that each echo can be checked)",
        "processes": "warelay serve (with its in-process workers) through bench/agent_path_serve.py; "
        "warelay simulator; bench/fake_llm.py (llm agent); the driver (this script)",
        "database": "sqlite, WAL, synchronous=FULL (warelay's defaults)",
        "mark_read": True,
        "typing_indicator": True,
        "bursts": "off (WARELAY_AGENT__ABORT_ON_NEWER=false, WARELAY_AGENT__BURST_WINDOW_MS=0)",
        "model": "bench/fake_llm.py: answers 'echo: <user text>' at once",
        "history_window": 10,
        "knowledge": "src/warelay/demo/knowledge/faq.csv and about.md (warelay knowledge add)",
        "log_level": "INFO (default), to a file",
    }


def headline_line(run: int, figures: Figures) -> str:
    """One line of the printed summary."""
    h = figures["headline"]
    return (
        f"   run {run} {figures['agent']:9s}  warelay CPU around the model p50/p99 "
        f"{h['warelay_cpu_around_model_ms_p50']}/{h['warelay_cpu_around_model_ms_p99']} ms "
        f"(lower bound p50 {h['warelay_cpu_around_model_uncorrected_ms_p50']}; "
        f"process {h['process_cpu_ms_p50']}, "
        f"framework {h['framework_cpu_ms_p50']})  latency added p50/p99 "
        f"{h['latency_added_ms_p50']}/{h['latency_added_ms_p99']} ms"
    )


def run_all(
    agents: Sequence[str],
    *,
    turns: int,
    warmup: int,
    repeat: int,
    quick: bool,
    profile_mode: str,
    keep: bool,
    quiet_s: float,
) -> Figures:
    """Every run, the targets, the profile when missed; returns the JSON document."""
    started, clock = datetime.now(UTC), time.monotonic()
    out_dir = RESULTS / "quick" if quick else RESULTS
    print(
        "\n== agent-path: warelay's CPU per turn around the model call, and the latency it adds", flush=True
    )
    quiet = wait_quiet(quiet_s)
    machine = machine_info()
    runs: list[Figures] = []
    for n in range(1, repeat + 1):
        for agent in agents:
            print(f"   run {n}/{repeat}: {AGENTS[agent].description}", flush=True)
            figures = measure(agent, turns=turns, warmup=warmup, keep=keep)
            runs.append({"run": n, **figures})
            print(headline_line(n, figures), flush=True)
    after = machine_info()
    if (after["warelay_commit"], after["warelay_src_uncommitted_changes"]) != (
        machine["warelay_commit"],
        machine["warelay_src_uncommitted_changes"],
    ):
        machine["warning"] = "src/ changed during the run: measure again"
        print(f"   warning: {machine['warning']}", flush=True)
    llm = [r for r in runs if r["agent"] == "llm"]
    isolation = framework_in_isolation(llm, 100 if quick else 500, keep) if llm else None
    targets = []
    if llm:
        worst = max(float(r["headline"]["warelay_cpu_around_model_ms_p50"]) for r in llm)
        targets.append(target("llm_warelay_cpu_around_model_ms_p50_worst_run", worst, "<=", TARGET_MS))
    for key in ("unanswered", "duplicated", "fallback_replies", "turns_not_settled"):
        targets.append(target(key, sum(int(r["correctness"][key]) for r in runs), "<=", 0))
    if llm:
        targets.append(
            target(
                "mismatched_replies", sum(int(r["correctness"]["mismatched_replies"]) for r in llm), "<=", 0
            )
        )
    missed = [t["name"] for t in targets if not t["met"]]
    document: Figures = {
        "scenario": "agent-path",
        "description": "warelay's CPU per turn around the model call (the model and the agent framework left "
        "out) and the latency it adds, for the llm agent through an instant fake model, and for the "
        "knowledge agent for comparison; turns one at a time",
        "quick": quick,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": None,
        "machine": {**machine, **quiet},
        "parameters": parameters(turns, warmup, repeat),
        "what_is_counted": COUNTED,
        "summary": {
            agent: [{"run": r["run"], **r["headline"]} for r in runs if r["agent"] == agent]
            for agent in agents
        },
        "targets": targets,
        "all_targets_met": not missed,
        "framework_in_isolation": isolation,
        "runs": runs,
    }
    if llm and (profile_mode == "always" or (profile_mode == "auto" and missed and not quick)):
        document["profile"] = profile_llm(out_dir, missed, keep)
    document["duration_s"] = round(time.monotonic() - clock, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "agent-path.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    verdict = "met" if not missed else "missed: " + ", ".join(missed)
    where = path.relative_to(ROOT)
    print(f"\nagent-path: {len(runs)} run(s) in {document['duration_s']:.0f} s; targets {verdict}; {where}")
    return document


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description="warelay's agent path: CPU around the model, latency added")
    parser.add_argument("--agent", action="append", choices=sorted(AGENTS), help="repeatable; default: both")
    parser.add_argument("--turns", type=int, help="measured turns per run (default 400; 60 with --quick)")
    parser.add_argument(
        "--warmup", type=int, help="warm-up turns per run, not counted (default 40; 10 with --quick)"
    )
    parser.add_argument(
        "--repeat", type=int, help="runs per agent, each on a fresh stack (default 2; 1 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small smoke run, written to bench/results/quick/"
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="profile the llm turns under pyinstrument: auto = when the target is missed (not with --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories (logs, databases)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        metavar="SECONDS",
        help="wait at most this long for other work on the machine to stop (default 30; 0 with --quick)",
    )
    args = parser.parse_args()
    turns = args.turns if args.turns is not None else (60 if args.quick else 400)
    warmup = args.warmup if args.warmup is not None else (10 if args.quick else 40)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 2)
    if turns < 1 or warmup < 0 or repeat < 1:
        parser.error("--turns and --repeat must be at least 1, --warmup at least 0")
    quiet_s = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.quick else 30.0)
    run_all(
        args.agent or ["llm", "knowledge"],
        turns=turns,
        warmup=warmup,
        repeat=repeat,
        quick=args.quick,
        profile_mode=args.profile,
        keep=args.keep,
        quiet_s=quiet_s,
    )


if __name__ == "__main__":
    main()
