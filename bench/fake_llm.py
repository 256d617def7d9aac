"""A minimal OpenAI-compatible Chat Completions server for the benchmark, run as its own process.

Where it sits: behind the ``llm`` agent (worker → agent → *model*). It answers
``POST /v1/chat/completions`` with ``echo: <last user message>`` after ``--delay`` seconds, in
OpenAI's response shape, over raw HTTP/1.1 keep-alive (no web framework), so that the model's side
costs as little CPU as possible on the shared cores and warelay's own cost stands out.

``python bench/fake_llm.py --port P [--delay S] [--stats FILE]``: serves until SIGTERM/SIGINT, then
writes request counts and the peak number of concurrent requests to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import resource
import signal
import time
from pathlib import Path
from typing import Any


class FakeLLM:
    """State of the fake model server."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests = 0
        self.inflight = 0
        self.peak_inflight = 0  # requests inside their delay at once (always 1 without a delay)
        self.connections = 0
        self.peak_connections = 0  # connections open at once: how many calls the client overlapped
        self.errors = 0
        self.ids = itertools.count(1)

    def answer(self, body: dict[str, Any]) -> bytes:
        """The completion for one request body."""
        text = "echo"
        for message in reversed(body.get("messages", [])):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    content = "".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
                text = f"echo: {content}"
                break
        words = len(text.split())
        payload = {
            "id": f"chatcmpl-bench-{next(self.ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "bench-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": words, "total_tokens": 100 + words},
        }
        return json.dumps(payload).encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one keep-alive connection."""
        self.connections += 1
        self.peak_connections = max(self.peak_connections, self.connections)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                first, *lines = head.decode("latin-1").split("\r\n")
                method, path = first.split(" ")[:2]
                length = 0
                for line in lines:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                raw = await reader.readexactly(length) if length else b""
                if method == "POST" and path.endswith("/chat/completions"):
                    status, out = await self._complete(raw)
                elif method == "GET" and path.endswith("/models"):
                    status, out = 200, b'{"object":"list","data":[{"id":"bench-model","object":"model"}]}'
                else:
                    status, out = 404, b'{"error":{"message":"not found","type":"invalid_request_error"}}'
                reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(out)}\r\n\r\n".encode()
                    + out
                )
                await writer.drain()
        finally:
            self.connections -= 1
            writer.close()

    async def _complete(self, raw: bytes) -> tuple[int, bytes]:
        self.requests += 1
        self.inflight += 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        try:
            try:
                body = json.loads(raw)
            except ValueError:
                self.errors += 1
                return 400, b'{"error":{"message":"bad json","type":"invalid_request_error"}}'
            if self.delay > 0:
                await asyncio.sleep(self.delay)
            return 200, self.answer(body)
        finally:
            self.inflight -= 1


async def serve(port: int, delay: float) -> dict[str, Any]:
    """Serve until a termination signal; returns the request statistics."""
    fake = FakeLLM(delay)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", port, backlog=2048)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake llm on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)
    return {
        "requests": fake.requests,
        "peak_inflight": fake.peak_inflight,
        "peak_connections": fake.peak_connections,
        "errors": fake.errors,
        "cpu_s": round(time.process_time(), 3),
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--stats", type=Path)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        stats = asyncio.run(serve(args.port, args.delay))
    else:
        stats = uvloop.run(serve(args.port, args.delay))
    if args.stats is not None:
        args.stats.write_text(json.dumps(stats))


if __name__ == "__main__":
    main()
