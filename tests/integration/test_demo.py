"""`warelay demo` in a clean directory: start, one message typed into the simulator, the reply, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.stack import free_port


def test_demo_answers_a_message_and_exits_cleanly(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARELAY_", "OPENAI_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "warelay.cli", "demo", "--port", str(port), "--simulator-port", str(sim_port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    httpx.get(f"http://127.0.0.1:{sim_port}/", timeout=1).raise_for_status()
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "demo did not start"
            time.sleep(0.2)
        chat_page = httpx.get(f"http://127.0.0.1:{sim_port}/", timeout=5)
        assert "<html" in chat_page.text.lower()
        sent = httpx.post(
            f"http://127.0.0.1:{sim_port}/_sim/users/15550001111/messages",
            json={"text": "What are your opening hours?", "name": "Demo User"},
            timeout=10,
        )
        assert sent.status_code == 200, sent.text
        reply = None
        while time.monotonic() < deadline and reply is None:
            chat = httpx.get(f"http://127.0.0.1:{sim_port}/_sim/users/15550001111/chat", timeout=5).json()
            replies = [m for m in chat["messages"] if m["direction"] == "out"]
            reply = replies[0] if replies else None
            time.sleep(0.1)
        assert reply is not None, "no reply shown in the simulator"
        assert "8:00" in reply["message"]["text"]["body"]  # the demo FAQ's opening hours
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "warelay demo is running" in out
    assert (tmp_path / ".warelay" / "secret.key").exists()
