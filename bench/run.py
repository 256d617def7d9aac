"""warelay's benchmark: the whole message path as shipped, measured from the outside.

Where it sits: around the path (webhook → inbox → worker → agent → outbox → Graph API). Every part
runs as its own process, started the way a user starts it: ``warelay serve`` (and ``warelay worker``)
configured through ``WARELAY_*`` variables, ``warelay simulator`` playing Meta's Graph API (with its
default sent/delivered/read status webhooks), ``bench/loadgen.py`` playing Meta's webhook deliveries,
and in the LLM scenarios ``bench/fake_llm.py`` playing the model. Durability stays at warelay's
defaults (SQLite ``synchronous=FULL``; PostgreSQL with fsync and synchronous_commit on), mark-read and
the typing indicator stay on, and the number's throughput tier is 1000 messages/s.

Usage::

    .venv/bin/python bench/run.py [--scenario NAME ...] [--quick] [--profile auto|always|never] [--keep]

Each scenario writes ``bench/results/<scenario>.json`` (``bench/results/quick/`` with ``--quick``). A
scenario that misses a target runs again under pyinstrument, and the top of the profile goes to
``bench/results/<scenario>.profile.txt``. PostgreSQL scenarios use ``BENCH_DATABASE_URL`` when it is
set, else a throwaway cluster of their own; ``TEST_DATABASE_URL`` is ignored on purpose, because the test
cluster runs with fsync off.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pgstats
from analysis import Reply, analyse_phase, replies_from_chat
from loadgen import wa_id_of
from procs import Proc, Watched, free_port, http_json, pg_server, wait_http, wait_port
from report import busy_seconds, headline, machine_info, render_profile, summary, target, wait_quiet

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
KNOWLEDGE = ROOT / "src" / "warelay" / "demo" / "knowledge"
PYTHON = Path(sys.executable)
WARELAY = PYTHON.with_name("warelay")

APP_SECRET = secrets.token_hex(16)
ACCESS_TOKEN = "bench-" + secrets.token_urlsafe(24)
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE_NUMBER = "15550783881"
FALLBACK_TEXT = "Sorry, something went wrong on our side. Please try again in a moment."
THROUGHPUT_MPS = 1000
POLL_S = 0.2

Figures = dict[str, Any]
PgServer = tuple[str, int | None]  # a libpq URL to create databases on, and our own server's pid
Targets = list[dict[str, Any]]


# ------------------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark scenario."""

    name: str
    description: str
    database: str  # "sqlite" | "postgresql"
    agent: str  # "knowledge" | "llm"
    worker_processes: int = 0  # `warelay serve --worker-processes N`; 0: workers in the serve process
    llm_delay: float | None = None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "gateway-sqlite",
            "knowledge agent, SQLite (WAL, synchronous=FULL), one `warelay serve` process with its workers",
            "sqlite",
            "knowledge",
        ),
        Scenario(
            "gateway-sqlite-workers",
            "knowledge agent, SQLite (WAL, synchronous=FULL), `warelay serve --worker-processes 2`: intake "
            "and API in serve, turns and sends in two worker processes",
            "sqlite",
            "knowledge",
            worker_processes=2,
        ),
        Scenario(
            "gateway-pg-1proc",
            "knowledge agent, PostgreSQL (fsync on), one `warelay serve` process with its workers",
            "postgresql",
            "knowledge",
        ),
        Scenario(
            "gateway-pg-workers",
            "knowledge agent, PostgreSQL (fsync on), `warelay serve --worker-processes 2`",
            "postgresql",
            "knowledge",
            worker_processes=2,
        ),
        Scenario(
            "llm-instant",
            "llm agent, a loopback OpenAI-compatible server answering at once, SQLite, one `warelay serve`",
            "sqlite",
            "llm",
            llm_delay=0.0,
        ),
        Scenario(
            "llm-instant-workers",
            "llm agent, a loopback OpenAI-compatible server answering at once, SQLite, "
            "`warelay serve --worker-processes 2`",
            "sqlite",
            "llm",
            worker_processes=2,
            llm_delay=0.0,
        ),
        Scenario(
            "llm-slow-2s",
            "llm agent, the model takes 2 s per reply, 1,000 users write one message each at once, SQLite, "
            "one `warelay serve`",
            "sqlite",
            "llm",
            llm_delay=2.0,
        ),
        Scenario(
            "llm-slow-2s-workers",
            "llm agent, the model takes 2 s per reply, 1,000 users write one message each at once, SQLite, "
            "`warelay serve --worker-processes 2`",
            "sqlite",
            "llm",
            worker_processes=2,
            llm_delay=2.0,
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes."""

    users: int
    per_user: int
    redeliver: float
    concurrency: int
    rate: float
    slow_users: int


FULL = Sizes(users=200, per_user=10, redeliver=0.10, concurrency=64, rate=200.0, slow_users=1000)
QUICK = Sizes(users=20, per_user=10, redeliver=0.10, concurrency=64, rate=200.0, slow_users=200)
# The profiled re-run only needs enough work for a stable profile; the figures come from the full run.
PROFILE_USERS = 50


def questions() -> list[str]:
    """What the bench users ask: the demo shop's FAQ questions, plus a few it has no answer to."""
    with (KNOWLEDGE / "faq.csv").open(encoding="utf-8") as f:
        asked = [row["question"] for row in csv.DictReader(f)]
    return [*asked, "Do you sell tea as well?", "Hello!", "Can I pay in euros?", "Thanks a lot"]


# --------------------------------------------------------------------------------------------- stack


@dataclass
class Stack:
    """The running processes of one scenario."""

    scenario: Scenario
    workdir: Path
    warelay_port: int
    sim_port: int
    pg_dsn: str | None = None
    pg_pid: int | None = None
    warelay: list[Proc] = field(default_factory=list)
    simulator: Proc | None = None
    llm: Proc | None = None
    profile_dir: Path | None = None  # where bench/profiled.py saves each process's session

    def profile_sessions(self) -> list[tuple[str, Path]]:
        """The profiled processes' sessions (saved as they exited): serve first, then its workers."""
        if self.profile_dir is None or not self.profile_dir.is_dir():
            return []
        found = sorted(
            self.profile_dir.glob("*.pyisession"), key=lambda p: (not p.name.startswith("serve"), p.name)
        )
        return [(f"warelay {p.stem.replace('-', ' (pid ', 1)})", p) for p in found]

    @property
    def sim_url(self) -> str:
        """The simulator's base URL."""
        return f"http://127.0.0.1:{self.sim_port}"

    def sim_counts(self) -> dict[str, int]:
        """The simulator's counters (``GET /_sim/state``)."""
        counts: dict[str, int] = http_json(f"{self.sim_url}/_sim/state")["counts"]
        return counts

    def procs(self) -> list[Proc]:
        """Every long-running process of the stack."""
        return [p for p in (*self.warelay, self.simulator, self.llm) if p is not None]

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of every process of the stack, and of our PostgreSQL server."""
        seconds = {p.name: p.cpu().seconds for p in self.procs()}
        if self.pg_pid is not None:
            seconds["postgresql"] = Watched("postgresql", self.pg_pid).cpu().seconds
        for p in self.warelay:
            main, others = p.thread_cpu()
            seconds[f"{p.name}: event loop thread"] = main
            seconds[f"{p.name}: other threads"] = others
            if self.scenario.worker_processes:
                seconds[f"{p.name}: its worker processes"] = max(0.0, seconds[p.name] - main - others)
                seconds.update(p.children_cpu())
        return seconds


def clean_env() -> dict[str, str]:
    """The caller's environment without any warelay, OpenAI or database settings."""
    prefixes = ("WARELAY_", "OPENAI_", "BENCH_", "TEST_DATABASE")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def warelay_env(
    scenario: Scenario, db_url: str, warelay_port: int, sim_port: int, llm_port: int | None
) -> dict[str, str]:
    """warelay's settings as a user gives them: environment variables (durability left at defaults)."""
    env = clean_env()
    env.update(
        {
            "WARELAY_DATABASE_URL": db_url,
            "WARELAY_SECRET_KEY": secrets.token_urlsafe(48),
            "WARELAY_PUBLIC_URL": f"http://127.0.0.1:{warelay_port}",
            "WARELAY_WHATSAPP__PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WARELAY_WHATSAPP__DISPLAY_PHONE_NUMBER": DISPLAY_PHONE_NUMBER,
            "WARELAY_WHATSAPP__ACCESS_TOKEN": ACCESS_TOKEN,
            "WARELAY_WHATSAPP__APP_SECRET": APP_SECRET,
            "WARELAY_WHATSAPP__VERIFY_TOKEN": secrets.token_urlsafe(12),
            "WARELAY_WHATSAPP__GRAPH_URL": f"http://127.0.0.1:{sim_port}",
            "WARELAY_WHATSAPP__THROUGHPUT_MPS": str(THROUGHPUT_MPS),
            "WARELAY_AGENT__KIND": scenario.agent,
            # One reply per message, as the core's targets are stated (issue 3 keeps bursts off here).
            "WARELAY_AGENT__ABORT_ON_NEWER": "false",
            "WARELAY_AGENT__BURST_WINDOW_MS": "0",
        }
    )
    if llm_port is not None:
        env["WARELAY_LLM__BASE_URL"] = f"http://127.0.0.1:{llm_port}/v1"
        env["WARELAY_LLM__MODEL"] = "bench-model"
    return env


def _profiled(argv: list[str]) -> list[str]:
    """A ``warelay`` command run under pyinstrument (see bench/profiled.py; its workers are profiled too)."""
    return [str(PYTHON), str(BENCH / "profiled.py"), *argv[1:]]


def _wait_log(proc: Proc, needle: str, timeout: float, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while proc.log_path.read_text(errors="replace").count(needle) < count:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} did not say {needle!r} within {timeout}s:\n{proc.tail()}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_stack(
    scenario: Scenario,
    db_url: str,
    workdir: Path,
    *,
    profile: bool,
    pg_dsn: str | None,
    pg_pid: int | None,
    wrapper: Path | None = None,
) -> Iterator[Stack]:
    """Start the fake model, load the knowledge, start the simulator and warelay; stop them all after.

    ``wrapper``: a bench script that runs the ``warelay`` command line in its own process (like
    bench/profiled.py; bench/agent_path_serve.py instruments the agents), started instead of ``warelay``.
    """
    warelay_port, sim_port = free_port(), free_port()
    llm_port = free_port() if scenario.llm_delay is not None else None
    env = warelay_env(scenario, db_url, warelay_port, sim_port, llm_port)
    stack = Stack(scenario, workdir, warelay_port, sim_port, pg_dsn, pg_pid)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        if llm_port is not None:
            fake = [str(PYTHON), str(BENCH / "fake_llm.py"), "--port", str(llm_port)]
            stack.llm = Proc(
                "fake-llm",
                [*fake, "--delay", str(scenario.llm_delay), "--stats", str(workdir / "fake-llm.json")],
                env=clean_env(),
                cwd=workdir,
                log_dir=logs,
            )
            wait_port(llm_port, timeout=20, proc=stack.llm)
        with (logs / "knowledge-add.log").open("wb") as log:
            subprocess.run(
                [str(WARELAY), "knowledge", "add", str(KNOWLEDGE / "faq.csv"), str(KNOWLEDGE / "about.md")],
                env=env,
                cwd=workdir,
                check=True,
                timeout=180,
                stdout=log,
                stderr=log,
            )
        webhook_url = f"http://127.0.0.1:{warelay_port}/webhooks/whatsapp"
        credentials = ["--app-secret", APP_SECRET, "--access-token", ACCESS_TOKEN]
        number = ["--phone-number-id", PHONE_NUMBER_ID]
        stack.simulator = Proc(
            "simulator",
            [
                str(WARELAY),
                "simulator",
                "--webhook-url",
                webhook_url,
                *credentials,
                *number,
                "--port",
                str(sim_port),
            ],
            env=clean_env(),
            cwd=workdir,
            log_dir=logs,
        )
        wait_http(f"{stack.sim_url}/_sim/state", timeout=30, proc=stack.simulator)
        serve = [str(WARELAY), "serve", "--port", str(warelay_port)]
        if scenario.worker_processes:
            serve += ["--worker-processes", str(scenario.worker_processes)]
        if profile:
            stack.profile_dir = workdir / "profiles"
            env = {**env, "BENCH_PROFILE_DIR": str(stack.profile_dir)}
            serve = _profiled(serve)
        elif wrapper is not None:
            serve = [str(PYTHON), str(wrapper), *serve[1:]]
        stack.warelay.append(Proc("warelay serve", serve, env=env, cwd=workdir, log_dir=logs))
        wait_http(f"http://127.0.0.1:{warelay_port}/readyz", timeout=60, proc=stack.warelay[0])
        if scenario.worker_processes:
            _wait_log(
                stack.warelay[0], "running; SIGTERM stops it", timeout=60, count=scenario.worker_processes
            )
        yield stack
    finally:
        for proc in reversed(stack.warelay):
            # SIGINT: uvicorn and the worker shut down gracefully, and pyinstrument writes its session.
            proc.stop(signal.SIGINT, timeout=60)
        for other in (stack.simulator, stack.llm):
            if other is not None:
                other.stop(signal.SIGTERM, timeout=15)


# --------------------------------------------------------------------------------------------- phases


@dataclass(frozen=True, slots=True)
class Load:
    """One load phase: who writes how much, and how it is sent."""

    name: str
    mode: str  # "open" | "rate"
    users: int
    per_user: int
    user_offset: int
    redeliver: float
    tag_texts: bool
    stall_s: float = 20.0


@dataclass
class PhaseRun:
    """What one load phase observed."""

    load: Load
    loadgen: dict[str, Any]
    cpu_s: dict[str, float]
    window_s: float
    machine_busy: float
    other_cpu_s: float
    threads_s: dict[str, float]
    sim_delta: dict[str, int]
    waited: dict[str, str]
    pg_delta: dict[str, int] | None


def _start_loadgen(stack: Stack, load: Load, sizes: Sizes) -> tuple[Proc, Path]:
    """Start the load generator and wait until its requests are built and its connections open."""
    spec = {
        "host": "127.0.0.1",
        "port": stack.warelay_port,
        "path": "/webhooks/whatsapp",
        "app_secret": APP_SECRET,
        "phone_number_id": PHONE_NUMBER_ID,
        "display_phone_number": DISPLAY_PHONE_NUMBER,
        "mode": load.mode,
        "users": load.users,
        "per_user": load.per_user,
        "user_offset": load.user_offset,
        "redeliver_fraction": load.redeliver,
        "concurrency": sizes.concurrency,
        "rate": sizes.rate,
        "seed": 20240611 + load.user_offset,
        "texts": questions(),
        "tag_texts": load.tag_texts,
        "time_limit": 180.0,
    }
    spec_path, out_path = stack.workdir / f"{load.name}.spec.json", stack.workdir / f"{load.name}.out.json"
    spec_path.write_text(json.dumps(spec))
    gen = Proc(
        f"loadgen-{load.name}",
        [str(PYTHON), str(BENCH / "loadgen.py"), str(spec_path), str(out_path)],
        env=clean_env(),
        cwd=stack.workdir,
        log_dir=stack.workdir / "logs",
        stdin=subprocess.PIPE,
        stdout_pipe=True,
    )
    stdout = gen.popen.stdout
    if stdout is None:
        raise RuntimeError("the load generator has no stdout pipe")
    ready, _, _ = select.select([stdout], [], [], 120)
    if not ready or stdout.readline().strip() != b"ready":
        gen.stop()
        raise RuntimeError(f"the load generator did not get ready:\n{gen.tail()}")
    return gen, out_path


def _wait_replies(stack: Stack, sent_before: int, expected: int, stall_s: float) -> str:
    """Wait until the simulator got ``expected`` more replies (or they stop coming)."""
    last_count, last_change = -1, time.monotonic()
    hard_deadline = time.monotonic() + 300
    while True:
        count = stack.sim_counts()["sent"] - sent_before
        if count >= expected:
            return "complete"
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        elif now - last_change > stall_s:
            return f"stalled at {count}/{expected} replies for {stall_s:.0f}s"
        if now > hard_deadline:
            return f"gave up at {count}/{expected} replies after 300s"
        time.sleep(POLL_S)


def _wait_statuses(stack: Stack) -> str:
    """Wait until warelay took every status webhook (sent/delivered/read are part of a message's cost)."""
    deadline = time.monotonic() + 60
    while True:
        c = stack.sim_counts()
        if (
            c["pending_statuses"] == 0
            and c["deliveries_in_flight"] == 0
            and c["statuses_delivered"] + c["webhook_failures"] >= c["statuses_produced"]
        ):
            return "complete"
        if time.monotonic() > deadline:
            return "statuses still in flight after 60s"
        time.sleep(POLL_S)


def run_phase(stack: Stack, load: Load, sizes: Sizes) -> PhaseRun:
    """Run the load generator once; wait until warelay answered everything and the statuses settled."""
    before = stack.sim_counts()
    pg_before = pgstats.counters(stack.pg_dsn) if stack.pg_dsn else None
    gen, out_path = _start_loadgen(stack, load, sizes)
    cpu0 = stack.cpu()
    busy0, t0 = busy_seconds(), time.monotonic()
    assert gen.popen.stdin is not None  # started with stdin=PIPE
    gen.popen.stdin.write(b"go\n")
    gen.popen.stdin.flush()
    try:
        gen.popen.wait(timeout=210)  # the load generator's own time limit is 180 s
    except subprocess.TimeoutExpired:
        gen.stop()
        raise RuntimeError("the load generator overran its time limit") from None
    gen.stop()
    expected = load.users * load.per_user
    waited = {"replies": _wait_replies(stack, before["sent"], expected, load.stall_s)}
    waited["statuses"] = _wait_statuses(stack)
    cpu1 = stack.cpu()
    busy1, t1 = busy_seconds(), time.monotonic()
    # A little longer, so that a late duplicate reply would still be seen.
    time.sleep(1.0)
    after = stack.sim_counts()
    pg_after = pgstats.counters(stack.pg_dsn) if stack.pg_dsn else None
    loadgen: dict[str, Any] = json.loads(out_path.read_text())
    cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 3) for k in cpu1}
    cpu["loadgen"] = round(float(loadgen["cpu_s"]), 3)
    threads = {k: cpu.pop(k) for k in list(cpu) if ": " in k}
    busy = busy1[0] - busy0[0]
    return PhaseRun(
        load=load,
        loadgen=loadgen,
        cpu_s=cpu,
        window_s=round(t1 - t0, 3),
        machine_busy=round(busy / max(1e-9, busy1[1] - busy0[1]), 3),
        # CPU spent outside the benchmark's processes: other work sharing the cores during the window.
        other_cpu_s=round(max(0.0, busy - sum(cpu.values())), 3),
        threads_s=threads,
        sim_delta={
            k: after[k] - before[k]
            for k in ("sent", "reads", "rejected", "statuses_delivered", "webhook_failures")
        },
        waited=waited,
        pg_delta={k: v - pg_before.get(k, 0) for k, v in pg_after.items()}
        if pg_after and pg_before
        else None,
    )


def fetch_replies(stack: Stack, offset: int, users: int) -> dict[int, list[Reply]]:
    """Every reply the simulator accepted for the phase's users, per user index."""
    return {
        u: replies_from_chat(http_json(f"{stack.sim_url}/_sim/users/{wa_id_of(offset, u)}/chat"))
        for u in range(users)
    }


def phase_figures(stack: Stack, run: PhaseRun, *, expect_echo: bool) -> Figures:
    """Everything measured in one phase."""
    rows = run.loadgen["deliveries"]
    expected = {r[2]: f"echo: {r[9]}" for r in rows if r[3] == 0} if expect_echo else None
    figures = analyse_phase(
        rows,
        fetch_replies(stack, run.load.user_offset, run.load.users),
        fallback_text=FALLBACK_TEXT,
        expected_text=expected,
    )
    ok = sum(1 for r in rows if r[6] == 200)
    elapsed = float(run.loadgen["elapsed_s"])
    warelay_cpu = sum(v for k, v in run.cpu_s.items() if k.startswith("warelay"))
    figures.update(
        {
            "send_duration_s": round(elapsed, 3),
            "ack_throughput_per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
            "loadgen_timed_out": run.loadgen["timed_out"],
            "late_sends": run.loadgen["late_sends"],
            "cpu": {
                "window_s": run.window_s,
                "warelay_s": round(warelay_cpu, 3),
                "warelay_ms_per_message": round(warelay_cpu / max(1, figures["messages"]) * 1000, 3),
                "database_server_ms_per_message": (
                    round(run.cpu_s["postgresql"] / max(1, figures["messages"]) * 1000, 3)
                    if "postgresql" in run.cpu_s
                    else None
                ),
                "per_process_s": run.cpu_s,
                # SQLite runs on the event loop unless its lock is busy (then in a thread); pyinstrument
                # sees only the event loop thread.
                "warelay_threads_s": run.threads_s,
                "machine_busy_fraction": run.machine_busy,
                "other_processes_s": run.other_cpu_s,
            },
            "loadgen_max_rss_mb": round(float(run.loadgen["max_rss_kb"]) / 1024, 1),
            "simulator": run.sim_delta,
            "waited": run.waited,
        }
    )
    if run.pg_delta is not None:
        figures["postgresql_per_message"] = pgstats.per_message(run.pg_delta, figures["messages"])
    return figures


# ------------------------------------------------------------------------------------------ workloads


def _failures(figures: Figures) -> int:
    c = figures["correctness"]
    return int(c["lost"] + c["fallback_replies"] + (c["mismatched_replies"] or 0))


def run_gateway(stack: Stack, sizes: Sizes, phases: Sequence[str]) -> tuple[Figures, Targets]:
    """Open loop (as fast as warelay acks), then a fixed 200 deliveries/s schedule from other users."""
    out: Figures = {}
    if "open_loop" in phases:
        load = Load("open_loop", "open", sizes.users, sizes.per_user, 0, sizes.redeliver, tag_texts=False)
        out["open_loop"] = phase_figures(stack, run_phase(stack, load, sizes), expect_echo=False)
    if "fixed_rate" in phases:
        # Other users (another wa_id range), so the two phases' replies never mix.
        load = Load(
            "fixed_rate", "rate", sizes.users, sizes.per_user, 100_000, sizes.redeliver, tag_texts=False
        )
        out["fixed_rate"] = phase_figures(stack, run_phase(stack, load, sizes), expect_echo=False)
        fixed = out["fixed_rate"]
        fixed["rate_per_s"] = sizes.rate
        if fixed["ack_throughput_per_s"] is not None and fixed["ack_throughput_per_s"] < 0.9 * sizes.rate:
            fixed["note"] = (
                f"warelay acknowledged {fixed['ack_throughput_per_s']}/s of the {sizes.rate:g}/s offered "
                "while answering at the same time: deliveries queued; the ack latency is mostly that queue"
            )
    targets: Targets = []
    if "open_loop" in out:
        targets.append(
            target("e2e_throughput_msg_per_s", out["open_loop"]["e2e_throughput_msg_per_s"], ">=", 500)
        )
    if "fixed_rate" in out:
        targets.append(
            target("ack_p99_ms_at_200_per_s", out["fixed_rate"]["ack_latency_ms"]["p99"], "<=", 25)
        )
    for key in ("lost", "duplicated", "out_of_order"):
        targets.append(target(key, sum(int(p["correctness"][key]) for p in out.values()), "<=", 0))
    return out, targets


def run_llm_instant(stack: Stack, sizes: Sizes, phases: Sequence[str]) -> tuple[Figures, Targets]:
    """The gateway's open-loop workload, answered by the llm agent through the fake model."""
    load = Load("open_loop", "open", sizes.users, sizes.per_user, 0, sizes.redeliver, tag_texts=True)
    figures = phase_figures(stack, run_phase(stack, load, sizes), expect_echo=True)
    figures["failures"] = _failures(figures)
    c = figures["correctness"]
    return {"open_loop": figures}, [
        target("e2e_throughput_msg_per_s", figures["e2e_throughput_msg_per_s"], ">=", 100),
        target("failures", figures["failures"], "<=", 0),
        target("duplicated", c["duplicated"], "<=", 0),
        target("out_of_order", c["out_of_order"], "<=", 0),
    ]


def run_llm_slow(stack: Stack, sizes: Sizes, phases: Sequence[str]) -> tuple[Figures, Targets]:
    """``slow_users`` users write one message each at once; the model takes 2 s per answer."""
    load = Load("burst", "open", sizes.slow_users, 1, 0, 0.0, tag_texts=True, stall_s=30.0)
    figures = phase_figures(stack, run_phase(stack, load, sizes), expect_echo=True)
    figures["failures"] = _failures(figures)
    lost = figures["correctness"]["lost"]
    figures["all_answered_after_s"] = figures["first_send_to_last_reply_s"] if lost == 0 else None
    return {"burst": figures}, [
        target("all_answered_after_s", figures["all_answered_after_s"], "<=", 15),
        target("failures", figures["failures"], "<=", 0),
    ]


Runner = Callable[[Stack, Sizes, Sequence[str]], tuple[Figures, Targets]]


def runner_for(scenario: Scenario) -> tuple[Runner, list[str]]:
    """The workload function of a scenario, and its phases."""
    if scenario.agent == "knowledge":
        return run_gateway, ["open_loop", "fixed_rate"]
    if scenario.llm_delay:
        return run_llm_slow, ["burst"]
    return run_llm_instant, ["open_loop"]


# ------------------------------------------------------------------------------------------ databases


@contextlib.contextmanager
def database(
    scenario: Scenario, workdir: Path, pg: PgServer | None, tag: str
) -> Iterator[tuple[str, str | None, Figures]]:
    """A fresh database for one run: a SQLite file on disk, or a new PostgreSQL database."""
    if scenario.database == "sqlite":
        info = {
            "kind": "sqlite",
            "file": "on local disk (ext4), new for each run",
            "journal_mode": "WAL (set by warelay)",
            "synchronous": "FULL (warelay's default; WARELAY_SQLITE_SYNCHRONOUS not set)",
        }
        yield f"sqlite+aiosqlite:///{workdir / f'warelay-{tag}.db'}", None, info
        return
    if pg is None:
        raise RuntimeError("no PostgreSQL server")
    name = f"warelay_bench_{scenario.name.replace('-', '_')}_{tag}"
    server, own_pid = pg
    # Statement statistics only for a profiled run, on our own cluster (which preloads the extension).
    settings = pgstats.create_database(
        server, name, track_statements=tag == "profile" and own_pid is not None
    )
    base = server.rsplit("/", 1)[0]
    try:
        own = "BENCH_DATABASE_URL" not in os.environ
        url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
        yield url, f"{base}/{name}", {"kind": "postgresql", "own_cluster": own, **settings}
    finally:
        pgstats.drop_database(server, name)


# ------------------------------------------------------------------------------------------ scenarios


def execute(
    scenario: Scenario,
    sizes: Sizes,
    pg: PgServer | None,
    workdir: Path,
    *,
    profile: bool,
    phases: Sequence[str],
) -> Figures:
    """Run a scenario once: a fresh database, its stack, its phases, the peak memory of every process."""
    runner, _ = runner_for(scenario)
    tag = "profile" if profile else "run"
    with (
        database(scenario, workdir, pg, tag) as (db_url, pg_dsn, db_info),
        running_stack(
            scenario, db_url, workdir, profile=profile, pg_dsn=pg_dsn, pg_pid=pg[1] if pg_dsn and pg else None
        ) as stack,
    ):
        tracked = profile and pg_dsn is not None and pg is not None and pg[1] is not None
        if tracked and pg_dsn is not None:
            pgstats.reset_statements(pg_dsn)
        figures, targets = runner(stack, sizes, phases)
        peaks = {name: round(kb / 1024, 1) for p in stack.procs() for name, kb in p.peak_rss_kb().items()}
        messages = sum(int(f["messages"]) for f in figures.values())
        statements = pgstats.top_statements(pg_dsn, messages) if tracked and pg_dsn is not None else None
    peaks["loadgen"] = max(float(f["loadgen_max_rss_mb"]) for f in figures.values())
    result: Figures = {"database": db_info, **figures, "peak_rss_mb": peaks, "targets": targets}
    stats = workdir / "fake-llm.json"
    if stats.exists():
        result["fake_llm"] = json.loads(stats.read_text())
        stats.unlink()
    result["exit_codes"] = {p.name: p.popen.returncode for p in stack.procs()}
    result["_sessions"] = stack.profile_sessions()
    result["_statements"] = statements
    return result


def llm_micro(workdir: Path, turns: int) -> Figures:
    """The agent framework's CPU per turn, measured in a process of its own (see bench/llm_micro.py)."""
    port = free_port()
    logs = workdir / "logs"
    fake = Proc(
        "fake-llm-micro",
        [str(PYTHON), str(BENCH / "fake_llm.py"), "--port", str(port)],
        env=clean_env(),
        cwd=workdir,
        log_dir=logs,
    )
    try:
        wait_port(port, timeout=20, proc=fake)
        out = workdir / "llm-micro.json"
        with (logs / "llm-micro.log").open("wb") as log:
            micro = [str(PYTHON), str(BENCH / "llm_micro.py"), "--base-url", f"http://127.0.0.1:{port}/v1"]
            subprocess.run(
                [*micro, "--turns", str(turns), "--out", str(out)],
                env=clean_env(),
                cwd=workdir,
                check=True,
                timeout=300,
                stdout=log,
                stderr=log,
            )
        result: Figures = json.loads(out.read_text())
        return result
    finally:
        fake.stop()


def cpu_split(document: Figures, micro: Figures) -> Figures:
    """warelay's CPU per LLM turn split into the agent framework's share and warelay's own."""
    total = document["open_loop"]["cpu"]["warelay_ms_per_message"]
    with_http = micro["pydantic_ai_openai_sdk_http"]["cpu_ms_per_turn"]
    return {
        "warelay_process_total": total,
        "agent_framework_pydantic_ai_only": micro["pydantic_ai_function_model"]["cpu_ms_per_turn"],
        "agent_framework_with_openai_sdk_and_http": with_http,
        "warelay_own": round(total - with_http, 3),
        "how": "warelay_process_total is warelay's CPU per message in the run above; the framework figures "
        "come from bench/llm_micro.py calling LLMAgent.respond one turn at a time in its own process "
        "(knowledge search stubbed): with pydantic-ai's FunctionModel (framework only), then with the real "
        "OpenAIChatModel over HTTP to the fake model (framework + openai SDK + HTTP client); "
        "warelay_own = total - the latter",
        "micro": micro,
    }


def profile_phases(scenario: Scenario, targets: Targets) -> list[str]:
    """The phase to profile again: the one behind the first missed target."""
    _, phases = runner_for(scenario)
    missed = {t["name"] for t in targets if not t["met"]}
    if (
        scenario.agent == "knowledge"
        and "e2e_throughput_msg_per_s" not in missed
        and "ack_p99_ms_at_200_per_s" in missed
    ):
        return ["fixed_rate"]
    return phases[:1]


def parameters(scenario: Scenario, sizes: Sizes) -> Figures:
    """The workload and the settings warelay ran with."""
    common: Figures = {
        "processes": [
            f"warelay serve --worker-processes {scenario.worker_processes} (intake and API; turns and sends "
            f"in {scenario.worker_processes} worker processes it starts)"
            if scenario.worker_processes
            else "warelay serve (with its in-process workers)"
        ],
        "database": scenario.database,
        "agent": scenario.agent,
        "throughput_mps": THROUGHPUT_MPS,
        "mark_read": True,
        "typing_indicator": True,
        "log_level": "INFO (default), to a file",
        "simulator": "`warelay simulator` CLI; default status webhooks (sent, delivered, read; batched)",
        "load_generator": "bench/loadgen.py: raw HTTP/1.1 keep-alive on loopback, signed bodies built before "
        "the clock starts",
    }
    if scenario.llm_delay is not None:
        common["model"] = f"bench/fake_llm.py: answers 'echo: <user text>' after {scenario.llm_delay:g} s"
    if scenario.llm_delay:
        return {**common, "users": sizes.slow_users, "messages_per_user": 1, "redeliveries": 0}
    workload: Figures = {
        "users": sizes.users,
        "messages_per_user": sizes.per_user,
        "messages": sizes.users * sizes.per_user,
        "redelivered_fraction": sizes.redeliver,
        "redelivery": "half are posted together with the first delivery, half after the user's next message",
        "open_loop_concurrency": sizes.concurrency,
        "order": "a user's next message is posted once the previous one was acknowledged",
    }
    if scenario.agent == "knowledge":
        workload["fixed_rate_per_s"] = sizes.rate
        workload["fixed_rate"] = (
            "other users, same workload; delivery i is posted at t = i / rate and its ack latency counts "
            "from that scheduled time"
        )
    return {**common, **workload}


def run_scenario(
    scenario: Scenario,
    sizes: Sizes,
    pg: PgServer | None,
    *,
    quick: bool,
    profile_mode: str,
    keep: bool,
    quiet_s: float,
) -> Figures:
    """Run, check the targets, profile when one is missed, and write the JSON result."""
    workdir = Path(tempfile.mkdtemp(prefix=f"warelay-bench-{scenario.name}."))
    out_dir = RESULTS / "quick" if quick else RESULTS
    started = datetime.now(UTC)
    clock = time.monotonic()
    try:
        print(f"\n== {scenario.name}: {scenario.description}", flush=True)
        quiet = wait_quiet(quiet_s)
        # The code measured is the code on disk when warelay starts; note it if it changes under the run.
        machine = machine_info()
        result = execute(scenario, sizes, pg, workdir, profile=False, phases=runner_for(scenario)[1])
        after = machine_info()
        if (after["warelay_commit"], after["warelay_src_uncommitted_changes"]) != (
            machine["warelay_commit"],
            machine["warelay_src_uncommitted_changes"],
        ):
            machine["warning"] = (
                f"src/ changed during the run (commit {machine['warelay_commit']} at the start, "
                f"{after['warelay_commit']} at the end): measure again"
            )
            print(f"   warning: {machine['warning']}", flush=True)
        document: Figures = {
            "scenario": scenario.name,
            "description": scenario.description,
            "quick": quick,
            "started_at": started.isoformat(timespec="seconds"),
            "duration_s": None,
            "machine": {**machine, **quiet},
            "parameters": parameters(scenario, sizes),
            **{k: v for k, v in result.items() if not k.startswith("_")},
        }
        if scenario.agent == "llm" and not scenario.llm_delay:
            document["cpu_split_ms_per_turn"] = cpu_split(document, llm_micro(workdir, 100 if quick else 500))
        missed = [t["name"] for t in document["targets"] if not t["met"]]
        document["all_targets_met"] = not missed
        if profile_mode == "always" or (profile_mode == "auto" and missed and not quick):
            document["profile"] = profile(scenario, sizes, pg, workdir, document, out_dir)
        document["duration_s"] = round(time.monotonic() - clock, 1)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{scenario.name}.json").write_text(json.dumps(document, indent=2) + "\n")
        return document
    finally:
        if keep:
            print(f"   work files kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def profile(
    scenario: Scenario, sizes: Sizes, pg: PgServer | None, workdir: Path, document: Figures, out_dir: Path
) -> Figures:
    """Run the scenario again with warelay's processes under pyinstrument; save the top of the profile."""
    missed = [t["name"] for t in document["targets"] if not t["met"]]
    phases = profile_phases(scenario, document["targets"])
    small = sizes if sizes.users <= PROFILE_USERS else replace(sizes, users=PROFILE_USERS)
    messages = small.slow_users if scenario.llm_delay else small.users * small.per_user
    print(f"   profiling {scenario.name} ({', '.join(phases)}, {messages} messages)", flush=True)
    profiled = execute(scenario, small, pg, workdir, profile=True, phases=phases)
    path = out_dir / f"{scenario.name}.profile.txt"
    header = (
        f"# pyinstrument profile of {scenario.name}: phase {', '.join(phases)}, {messages} messages\n"
        f"# why: missed targets {', '.join(missed) or '(none: --profile always)'}\n"
        f"# profiled run (slowed by sampling): {json.dumps(headline(profiled))}\n"
        "# Sampled wall time of each process's main thread (the event loop). The loop's own frame\n"
        "# (Runner.run [self]) is uvloop's C code: the selector's wait when idle, socket I/O and callback\n"
        "# dispatch when busy. The message path's SQLite transactions run on the loop (storage/direct.py);\n"
        "# other threads (SQLAlchemy's aiosqlite for set-up and the API) are not sampled: the JSON's\n"
        "# cpu.warelay_threads_s gives their share of the CPU. With --worker-processes, each worker\n"
        "# process has a section of its own."
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_profile(profiled["_sessions"], header)
    if profiled["_statements"]:
        text += (
            "\n## PostgreSQL: statements by total execution time (pg_stat_statements, profiled run)\n\n"
            + profiled["_statements"]
            + "\n"
        )
    path.write_text(text)
    return {
        "file": str(path.relative_to(ROOT)),
        "missed_targets": missed,
        "phases": phases,
        "messages": messages,
        "profiled_run": headline(profiled),
        "note": "warelay serve (and the extra worker) ran under pyinstrument, so these figures are slowed",
    }


def main() -> None:
    """Parse the command line and run the scenarios."""
    parser = argparse.ArgumentParser(description="warelay's end-to-end benchmark")
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default: all"
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (200 messages)")
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="run again under pyinstrument: auto = when a target is missed (not with --quick)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories (logs, databases)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        metavar="SECONDS",
        help="wait at most this long before each scenario for other work on the machine to stop "
        "(default 30; 0 with --quick)",
    )
    args = parser.parse_args()
    scenarios = [SCENARIOS[n] for n in (args.scenario or list(SCENARIOS))]
    sizes = QUICK if args.quick else FULL
    quiet_s = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.quick else 30.0)
    documents: list[Figures] = []
    started = time.monotonic()
    with contextlib.ExitStack() as resources:
        pg = (
            resources.enter_context(pg_server())
            if any(s.database == "postgresql" for s in scenarios)
            else None
        )
        for scenario in scenarios:
            documents.append(
                run_scenario(
                    scenario,
                    sizes,
                    pg,
                    quick=args.quick,
                    profile_mode=args.profile,
                    keep=args.keep,
                    quiet_s=quiet_s,
                )
            )
            print(summary(documents[-1:]).splitlines()[-1], flush=True)
    where = (RESULTS / "quick" if args.quick else RESULTS).relative_to(ROOT)
    print(
        f"\nwarelay benchmark{' (quick)' if args.quick else ''}: {len(documents)} scenario(s) in "
        f"{time.monotonic() - started:.0f} s; results in {where}/\n"
    )
    print(summary(documents))


if __name__ == "__main__":
    main()
