"""Run the ``warelay`` command line under pyinstrument, one session file per process.

``python bench/profiled.py ARGS…`` is ``warelay ARGS…`` with pyinstrument sampling the event loop
thread; the session goes to ``$BENCH_PROFILE_DIR/<command>-<pid>.pyisession`` when the process
exits (SIGINT for ``serve``, SIGTERM for workers). Worker processes that ``serve
--worker-processes`` starts are started the same way as ``serve`` was (see
``warelay.supervisor.relaunch_command``), so each of them is profiled into its own file too.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from pyinstrument import Profiler

from warelay.cli import main as warelay


def main() -> None:
    """Profile one warelay command."""
    out = Path(os.environ["BENCH_PROFILE_DIR"])
    sys.argv = ["warelay", *sys.argv[1:]]
    command = sys.argv[1] if len(sys.argv) > 1 else "warelay"
    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        warelay()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        session = profiler.stop()
        out.mkdir(parents=True, exist_ok=True)
        session.save(str(out / f"{command}-{os.getpid()}.pyisession"))
    # serve ends by re-raising the signal that stopped it (uvicorn); the session is saved by now.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    main()
