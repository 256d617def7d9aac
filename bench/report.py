"""Reporting for the benchmark: machine facts, targets, the summary table and the profile text.

Where it sits: after the message path has been measured (see ``bench/run.py``). Nothing here touches
warelay; it turns figures into the JSON fields and the text a reader compares across runs.
"""

from __future__ import annotations

import contextlib
import platform
import pstats
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs in the venv (types-psutil is not installed)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)
TREE_LINES = 160
FLAT_LINES = 45


def busy_seconds() -> tuple[float, float]:
    """CPU seconds the machine has spent busy, and in total, across all cores (since boot)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle, sum(t)


def background_busy(seconds: float) -> float:
    """How busy the cores are (0..1) over ``seconds`` while the benchmark runs nothing."""
    b0 = busy_seconds()
    time.sleep(seconds)
    b1 = busy_seconds()
    return round((b1[0] - b0[0]) / max(1e-9, b1[1] - b0[1]), 3)


def wait_quiet(limit_s: float, threshold: float = 0.15) -> dict[str, Any]:
    """Wait at most ``limit_s`` for other work on the machine to calm down; report what was seen."""
    waited = 0.0
    busy = background_busy(2.0)
    while busy > threshold and waited < limit_s:
        time.sleep(3.0)
        waited += 5.0
        busy = background_busy(2.0)
    return {"busy_fraction_before_start": busy, "waited_for_quiet_s": waited}


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, Python, OS, and which warelay commit (and local changes) was measured."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit: str | None = None
    modified: list[str] | None = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        modified = [line[3:] for line in status.splitlines() if line.strip()]
    return {
        "cores_logical": psutil.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "warelay_commit": commit,
        "warelay_src_uncommitted_changes": modified,
    }


def target(name: str, measured: float | None, op: str, bound: float) -> dict[str, Any]:
    """A target and whether the measured figure meets it (``op`` is ``>=`` or ``<=``)."""
    met = measured is not None and (measured >= bound if op == ">=" else measured <= bound)
    return {"name": name, "target": f"{op} {bound:g}", "measured": measured, "met": bool(met)}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """A few figures of a run, for the summary table and for a profiled run's record."""
    first = next(result[k] for k in ("open_loop", "burst", "fixed_rate") if k in result)
    out: dict[str, Any] = {
        "e2e_msg_per_s": first.get("e2e_throughput_msg_per_s"),
        "ack_per_s": first.get("ack_throughput_per_s"),
        "ack_p50_ms": first["ack_latency_ms"]["p50"],
        "ack_p99_ms": first["ack_latency_ms"]["p99"],
        "e2e_p50_ms": first["e2e_latency_ms"]["p50"],
        "e2e_p99_ms": first["e2e_latency_ms"]["p99"],
        "warelay_cpu_ms_per_msg": first["cpu"]["warelay_ms_per_message"],
    }
    if first["cpu"].get("database_server_ms_per_message") is not None:
        out["database_cpu_ms_per_msg"] = first["cpu"]["database_server_ms_per_message"]
    if "fixed_rate" in result:
        out["ack_p99_ms_at_fixed_rate"] = result["fixed_rate"]["ack_latency_ms"]["p99"]
    if "burst" in result:
        out["all_answered_after_s"] = result["burst"].get("all_answered_after_s")
    return out


def summary(documents: Sequence[dict[str, Any]]) -> str:
    """The table printed at the end of a run."""
    head = [
        "scenario",
        "e2e msg/s",
        "ack/s",
        "ack p50/p99 ms",
        "ack p99 @200/s",
        "e2e p50/p99 ms",
        "cpu ms/msg",
        "lost/dup/ooo",
        "targets",
    ]
    rows = [head]
    for d in documents:
        h = headline(d)
        phases = [d[p] for p in ("open_loop", "fixed_rate", "burst") if p in d]
        c = {
            k: sum(int(p["correctness"][k] or 0) for p in phases)
            for k in ("lost", "duplicated", "out_of_order")
        }
        e2e = str(h["e2e_msg_per_s"])
        if "all_answered_after_s" in h:
            e2e += f" (all in {h['all_answered_after_s']} s)"
        missed = [t["name"] for t in d["targets"] if not t["met"]]
        rows.append(
            [
                d["scenario"],
                e2e,
                str(h["ack_per_s"]),
                f"{h['ack_p50_ms']}/{h['ack_p99_ms']}",
                str(h.get("ack_p99_ms_at_fixed_rate", "-")),
                f"{h['e2e_p50_ms']}/{h['e2e_p99_ms']}",
                str(h["warelay_cpu_ms_per_msg"])
                + (f" (+{h['database_cpu_ms_per_msg']} db)" if "database_cpu_ms_per_msg" in h else ""),
                f"{c['lost']}/{c['duplicated']}/{c['out_of_order']}",
                "met" if not missed else "missed: " + ", ".join(missed),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


# ------------------------------------------------------------------------------------------- profiles


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if "/lib/python3." in path:
        return path.split("/lib/python3.", 1)[1].split("/", 1)[-1]
    return path


def flat_profile(session: Path) -> str:
    """Functions by own time, then warelay's functions by total time, from a pyinstrument session."""
    out = session.with_suffix(".pstats")
    subprocess.run(
        [str(PYTHON), "-m", "pyinstrument", f"--load={session}", "-r", "pstats", "-o", str(out)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    # Import-time frames (<module>) are start-up, not per-message work: left out.
    rows = [
        (float(v[2]), float(v[3]), f"{func}  {_short(file)}:{line}")
        for (file, line, func), v in stats.items()
        if func != "<module>"
    ]
    lines = ["  own s  total s  function (import-time <module> frames left out)"]
    lines += [
        f"{own:7.3f}  {total:7.3f}  {name}" for own, total, name in sorted(rows, reverse=True)[:FLAT_LINES]
    ]
    lines += [
        "",
        "warelay's own functions by total time (what they call included):",
        "  own s  total s  function",
    ]
    ours = sorted((r for r in rows if "warelay/" in r[2]), key=lambda r: -r[1])
    lines += [f"{own:7.3f}  {total:7.3f}  {name}" for own, total, name in ours[:35]]
    return "\n".join(lines)


def call_tree(session: Path) -> list[str]:
    """pyinstrument's call tree of a session (library frames folded, frames under 0.5 % dropped)."""
    load = [str(PYTHON), "-m", "pyinstrument", f"--load={session}"]
    return subprocess.run(
        [*load, "-r", "text", "--no-color", "--unicode", "-p", "processor_options.filter_threshold=0.005"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    ).stdout.splitlines()


def render_profile(sessions: Sequence[tuple[str, Path]], header: str) -> str:
    """The top of each profiled process: a flat own-time list, then the call tree."""
    parts = [header]
    for name, session in sessions:
        if not session.exists():
            parts.append(f"\n## {name}: no profile was written ({session.name} missing)\n")
            continue
        parts.append(f"\n## {name}: functions by own time (sampled wall time of the main thread)\n")
        parts.append(flat_profile(session))
        tree = call_tree(session)
        parts.append(f"\n## {name}: call tree (first {min(TREE_LINES, len(tree))} of {len(tree)} lines)\n")
        parts.append("\n".join(tree[:TREE_LINES]))
    return "\n".join(parts) + "\n"
