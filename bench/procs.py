"""Process plumbing for the benchmark: start and stop processes, measure their CPU and peak memory,
talk to loopback HTTP endpoints, and run a throwaway PostgreSQL cluster with its normal durability.

Where it sits: around the message path, never in it. ``bench/run.py`` starts warelay, the simulator,
the fake model and the load generator as separate processes through :class:`Proc`, the way a user
would start them, and reads their cost from the operating system (psutil, ``/proc/PID/status``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped]  # no stubs in the venv (types-psutil is not installed)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, *, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
    """A JSON request to a loopback URL; returns the decoded body (raises on a non-2xx status)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the benchmark talks to loopback only, not {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback http only
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback http only
        return json.loads(response.read() or b"null")


def wait_http(url: str, *, timeout: float, proc: Proc | None = None) -> None:
    """Wait until ``url`` answers 2xx; fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            http_json(url, timeout=2.0)
            return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout}s")
        time.sleep(0.1)


def wait_port(port: int, *, timeout: float, proc: Proc | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} not open within {timeout}s")
        time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds (user + system) of a process and its children at one moment."""

    at: float
    seconds: float


def tree_cpu_seconds(ps: psutil.Process) -> float:
    """CPU seconds (user + system) of a process, its live children and its reaped children."""
    try:
        family = [ps, *ps.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for i, p in enumerate(family):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
            if i == 0:
                total += t.children_user + t.children_system
    return total


class Watched:
    """A process the benchmark did not start but measures (the PostgreSQL server and its backends)."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.ps = psutil.Process(pid)

    def cpu(self) -> CpuSample:
        """CPU seconds used so far by the process and its children."""
        return CpuSample(time.monotonic(), tree_cpu_seconds(self.ps))


class Proc:
    """One started process with its log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_dir: Path,
        stdin: int | None = subprocess.DEVNULL,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name.replace(' ', '-')}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.popen: subprocess.Popen[bytes] = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=stdin,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
        )
        self.ps = psutil.Process(self.popen.pid)
        self._peaks: dict[int, int] = {}  # pid → VmHWM in KiB
        self._final_cpu: float | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> CpuSample:
        """CPU seconds used so far by the process, its live children and its reaped children."""
        if self._final_cpu is not None:
            return CpuSample(time.monotonic(), self._final_cpu)
        return CpuSample(time.monotonic(), tree_cpu_seconds(self.ps))

    def thread_cpu(self) -> tuple[float, float]:
        """CPU seconds of the main thread (the event loop) and of every other thread, so far.

        The other threads' share is the process total minus the main thread, so threads that have
        already exited (aiosqlite starts one per connection) are counted too.
        """
        try:
            threads = self.ps.threads()
            total = self.ps.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0, 0.0
        main = sum(t.user_time + t.system_time for t in threads if t.id == self.pid)
        return main, max(0.0, total.user + total.system - main)

    def children_cpu(self) -> dict[str, float]:
        """CPU seconds so far of each live child process (``<name>: child <n>``, by process id)."""
        seconds: dict[str, float] = {}
        for n, child in enumerate(sorted(self._tree()[1:], key=lambda c: c.pid), 1):
            with contextlib.suppress(psutil.NoSuchProcess):
                t = child.cpu_times()
                seconds[f"{self.name}: child {n}"] = t.user + t.system
        return seconds

    def peak_rss_kb(self) -> dict[str, int]:
        """Peak resident set size (VmHWM) in KiB, as seen so far, of the process and of each child process.

        The process is reported under its own name, its children (the worker processes of ``serve
        --worker-processes``) as ``<name>: child <n>`` in the order they were first seen.
        """
        for p in self._tree():
            with contextlib.suppress(OSError, psutil.NoSuchProcess):
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self._peaks[p.pid] = max(self._peaks.get(p.pid, 0), int(line.split()[1]))
        named = {self.name: self._peaks.get(self.pid, 0)}
        children = [pid for pid in self._peaks if pid != self.pid]
        named.update({f"{self.name}: child {n}": self._peaks[pid] for n, pid in enumerate(children, 1)})
        return named

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process and wait for it (killed after ``timeout``); returns its exit code."""
        if self.popen.poll() is None:
            self.peak_rss_kb()
            self._final_cpu = self.cpu().seconds
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode

    def tail(self, lines: int = 20) -> str:
        """The end of the process's log, for error reports."""
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class PgCluster:
    """A throwaway PostgreSQL cluster on loopback with the server's default durability settings.

    Like scripts/with-postgres.sh, but fsync, synchronous_commit and full_page_writes stay at their
    defaults (on): a benchmark of a durable queue must pay for durable commits.
    """

    def __init__(self) -> None:
        self.bin = self._find_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="warelay-bench-pg."))
        self.port = free_port()
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.started = False

    @staticmethod
    def _find_bin() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
        if not found:
            raise RuntimeError(
                "PostgreSQL is not installed: install it (apt-get install postgresql), "
                "or set BENCH_DATABASE_URL to a server of your own"
            )
        return found[-1].parent

    def start(self) -> None:
        """initdb and start the server."""
        self.dir.chmod(0o755)
        if self.run_as:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        initdb = [str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        subprocess.run(
            [*self.run_as, *initdb, "-E", "UTF8", "--locale=C.UTF-8"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # pg_stat_statements is loaded but tracks nothing unless a database asks for it (the profiled
        # runs do): durability and planning stay the server's defaults.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200 "
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=none"
        )
        pg_ctl = [str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "server.log"), "-w"]
        subprocess.run(
            [*self.run_as, *pg_ctl, "-o", options, "start"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.started = True

    def postmaster_pid(self) -> int:
        """The server's process id (first line of ``postmaster.pid``)."""
        return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def admin_url(self) -> str:
        """A URL of the maintenance database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the server and remove its files."""
        if self.started:
            subprocess.run(
                [*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def pg_server() -> Iterator[tuple[str, int | None]]:
    """A PostgreSQL server to create databases on: BENCH_DATABASE_URL, else a cluster of our own.

    Yields a libpq-style URL and, for our own cluster, the server's pid (to measure its CPU).
    """
    given = os.environ.get("BENCH_DATABASE_URL")
    if given:
        yield given.replace("postgresql+asyncpg://", "postgresql://", 1), None
        return
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster.admin_url(), cluster.postmaster_pid()
    finally:
        cluster.stop()
