"""An OpenAI-compatible chat endpoint on 127.0.0.1 that injects faults, for the fault tests and the benchmark.

It answers augmentation requests with the gold label it is told ("<label>. Reasoning: ..."), judge requests
with a JSON score object, and, for a seeded share of requests, fails instead: 429 (with a short
retry-after-ms), 500, a hang past the client's timeout, a 200 whose JSON body is cut short, or a connection
dropped before any response. It counts what it received and, per request body, what it *billed*: a 200 with
a complete answer (a hung or cut-off answer reached nobody and is not billed).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import random
import re
import threading
import time
from collections import Counter
from contextlib import contextmanager, suppress

FAULTS = ("429", "500", "timeout", "truncated", "drop")
_GOLD = re.compile(r"The correct answer is: (.+?)\.\n")


def answer_for(request: dict) -> str:
    if "response_format" in request:  # the judge
        return json.dumps(
            {c: 3 for c in ("accuracy", "empathy", "clarity", "guidance", "safety", "helpfulness")}
        )
    user = request["messages"][-1]["content"]
    gold = _GOLD.search(user)
    head = f"{gold.group(1)}. Reasoning:" if gold else "A reference answer:"
    return f"{head} the readings and the text given support this answer, as explained here in brief."


class FaultEndpoint:
    def __init__(self, fault_share: float = 0.0, seed: int = 0, hang_s: float = 3.0, host: str = "127.0.0.1"):
        self.fault_share, self.hang_s = fault_share, hang_s
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.received = 0
        self.faults: Counter = Counter()
        self.billed: Counter = Counter()  # request-body hash -> complete answers sent
        self.authorization: set[str] = set()
        self.redirect_to: str | None = None  # answer every request with a 307 to this URL
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, json.dumps({"data": [{"id": "fault-model"}]}).encode())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fault = endpoint._next_fault()
                with endpoint.lock:
                    endpoint.authorization.add(self.headers.get("Authorization", ""))
                if endpoint.redirect_to:
                    self.send_response(307)
                    self.send_header("Location", endpoint.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "429":
                    return self._send(429, b'{"error": {"message": "slow down"}}', {"retry-after-ms": "20"})
                if fault == "500":
                    return self._send(500, b'{"error": {"message": "internal"}}')
                if fault == "timeout":
                    time.sleep(endpoint.hang_s)
                    self.close_connection = True
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                request = json.loads(body)
                payload = json.dumps(
                    {
                        "id": "chatcmpl-fault",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": request["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": answer_for(request)},
                            }
                        ],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
                    }
                ).encode()
                if fault == "truncated":
                    return self._send(200, payload[: len(payload) // 2])
                self._send(200, payload)
                with endpoint.lock:
                    endpoint.billed[hashlib.sha256(body).hexdigest()] += 1

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                with suppress(OSError):
                    self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def _next_fault(self) -> str | None:
        with self.lock:
            self.received += 1
            if self.random.random() >= self.fault_share:
                return None
            fault = self.random.choice(FAULTS)
            self.faults[fault] += 1
            return fault

    @property
    def duplicate_bills(self) -> int:
        return sum(n - 1 for n in self.billed.values() if n > 1)


@contextmanager
def fault_endpoint(**kwargs):
    endpoint = FaultEndpoint(**kwargs)
    thread = threading.Thread(target=endpoint.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()


@contextmanager
def listener():
    """A bare TCP listener on 127.0.0.1 that counts connections (and never answers)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    state = {"connections": 0, "stop": False}

    def accept() -> None:
        while not state["stop"]:
            try:
                connection, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            state["connections"] += 1
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], state
    finally:
        state["stop"] = True
        thread.join()
        server.close()
