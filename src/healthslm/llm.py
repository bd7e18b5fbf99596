"""OpenAI-compatible endpoints for the augment and judge stages.

- Privacy: records are health data, so a base_url that is not on this machine is refused before any request
  unless the params opt in (`allow_remote`); the key comes from the environment only. The rule holds at the
  socket: requests to a loopback server ignore proxy variables, follow no redirect and carry no provider key;
  requests to an opted-in remote host may use the user's proxy, and a redirect off that host is refused.
- The default endpoint is a llama.cpp server (llama-cpp-python's `llama_cpp.server`) on 127.0.0.1 serving the
  embedded GGUF, started on the first request that the cache cannot answer and stopped after the stage.
- Every request is keyed by a hash of (model, messages, generation params); responses are appended to a JSONL
  cache and fsynced as they arrive, so a killed run resumes with no repeated request.
- Retries (timeouts, 429, 5xx, dropped connections, with backoff) are the openai client's own; a request that
  still fails is returned as a failed reply with its reason (the stage lists it), not cached, and asked again
  on the next run. Identical requests in flight at once are sent once. HTTP requests are counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from healthslm.errors import HealthSLMError
from healthslm.params import Endpoint, is_loopback
from healthslm.resources import physical_cores

LOCAL_MODEL_PRESET = "smollm2-135m"  # the embedded GGUF the local server serves
SERVER_START_TIMEOUT_S = 180
# USD per 1M input / output tokens (OpenAI list price) of the seeds' augmenter, for the cost comparison
GPT_4O_MINI_PRICES = (0.15, 0.60)


def check_privacy(endpoint: Endpoint, where: str) -> None:
    """Refuse, before anything is sent, an endpoint off this machine that the user has not opted into."""
    if endpoint.base_url and not is_loopback(endpoint.base_url) and not endpoint.allow_remote:
        raise HealthSLMError(
            f"{where}.endpoint.base_url {endpoint.base_url} is not on this machine and the records are "
            f"health data; set {where}.endpoint.allow_remote: true to send them there"
        )


DEFAULT_KEY_ENV = Endpoint.model_fields["api_key_env"].default


def is_local(endpoint: Endpoint) -> bool:
    return not endpoint.base_url or is_loopback(endpoint.base_url)


def _api_key(endpoint: Endpoint, where: str) -> str:
    if is_local(endpoint) and endpoint.api_key_env == DEFAULT_KEY_ENV:
        return "not-needed"  # a provider's key never goes to a local server; a local key has its own variable
    key = os.environ.get(endpoint.api_key_env)
    if not key and not is_local(endpoint):
        raise HealthSLMError(
            f"{where}.endpoint: {endpoint.api_key_env} is not set (the key is read from the environment only)"
        )
    return key or "not-needed"


def http_client(endpoint: Endpoint, where: str, on_request: Callable):
    """The HTTP client of an endpoint, with the privacy rule at the socket (see the module docstring)."""
    import httpx
    import openai

    if is_local(endpoint):
        return openai.DefaultHttpxClient(
            trust_env=False, follow_redirects=False, event_hooks={"request": [on_request]}
        )
    host = urlparse(endpoint.base_url).hostname

    def same_host(request: httpx.Request) -> None:
        if request.url.host != host:
            raise HealthSLMError(
                f"{where}.endpoint: refused a redirect from {host} to {request.url.host} (records go only to "
                "the opted-in host)"
            )

    return openai.DefaultHttpxClient(follow_redirects=True, event_hooks={"request": [same_host, on_request]})


def request_key(model: str, messages: list[dict], generation: dict) -> str:
    payload = json.dumps({"model": model, "messages": messages, **generation}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    """Append-only JSONL of responses by request key, flushed and fsynced line by line.

    A line that cannot be read (a torn write, a disk fault) is skipped and counted, and every other line
    kept: a bad line costs only its own response. A last line without its newline (a kill mid-write) is
    cut off when the cache is opened, so the next append starts on a line of its own."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}
        self.skipped_lines: list[int] = []  # 1-based numbers of the lines that could not be read
        self._lock = threading.Lock()
        self._read()
        self._file = self.path.open("a", encoding="utf-8")

    def _read(self) -> None:
        if not self.path.exists():
            return
        complete = 0
        with self.path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.endswith(b"\n"):
                    self.skipped_lines.append(number)
                    break
                complete += len(line)
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = {"key": entry["key"], "reply": dict(entry["reply"])}
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
                    self.skipped_lines.append(number)
        if complete < self.path.stat().st_size:
            with self.path.open("r+b") as fh:
                fh.truncate(complete)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, entry: dict) -> None:
        with self._lock:
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self.entries[entry["key"]] = entry

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    key: str
    cached: bool
    error: str | None = None  # why the endpoint gave no answer after its retries (text is then empty)


@dataclass
class Usage:
    http_requests: int = 0
    cache_hits: int = 0
    new_responses: int = 0
    failed: Counter = field(default_factory=Counter)  # requests unanswered after retries, by reason
    prompt_tokens: int = 0  # of this run's new responses
    completion_tokens: int = 0
    all_prompt_tokens: int = 0  # of every response used, cached or new: what the set cost to make
    all_completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, reply: Reply) -> None:
        if reply.error is not None:
            self.failed[reply.error] += 1
            return
        self.all_prompt_tokens += reply.prompt_tokens
        self.all_completion_tokens += reply.completion_tokens
        if reply.cached:
            self.cache_hits += 1
        else:
            self.new_responses += 1
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens

    def summary(self, endpoint: Endpoint, model: str, cache: ResponseCache) -> dict:
        wall = time.perf_counter() - self.started
        answered = self.cache_hits + self.new_responses

        def cost(prompt: int, completion: int, prices: tuple[float, float]) -> float:
            return round((prompt * prices[0] + completion * prices[1]) / 1e6, 6)

        prices = (endpoint.price_per_1m_input, endpoint.price_per_1m_output)
        return {
            "endpoint": _describe_endpoint(endpoint),
            "model": model,
            "http_requests": self.http_requests,
            "new_responses": self.new_responses,
            "cache_hits": self.cache_hits,
            "failed_requests": sum(self.failed.values()),
            "failed_by_reason": dict(self.failed.most_common()),
            "cache_hit_rate": round(self.cache_hits / answered, 4) if answered else None,
            "wall_s": round(wall, 2),
            "requests_per_s": round(self.new_responses / wall, 3) if self.new_responses else None,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": cost(self.prompt_tokens, self.completion_tokens, prices),
            "all_prompt_tokens": self.all_prompt_tokens,
            "all_completion_tokens": self.all_completion_tokens,
            "all_cost_usd": cost(self.all_prompt_tokens, self.all_completion_tokens, prices),
            "all_cost_usd_at_gpt_4o_mini": cost(
                self.all_prompt_tokens, self.all_completion_tokens, GPT_4O_MINI_PRICES
            ),
            "cache_skipped_lines": cache.skipped_lines,
        }


def _describe_endpoint(endpoint: Endpoint) -> str:
    if not endpoint.base_url:
        return "local llama.cpp server (127.0.0.1)"
    parsed = urlparse(endpoint.base_url)  # scheme and host only: a URL may carry credentials
    return f"{parsed.scheme}://{parsed.hostname}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log, lines: int = 6) -> str:
    log.seek(0)
    return " | ".join(log.read().decode(errors="replace").strip().splitlines()[-lines:])


def _wait_ready(process: subprocess.Popen, base_url: str, log, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HealthSLMError(f"the llama.cpp server exited ({process.returncode}): {_log_tail(log)}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise HealthSLMError(f"the llama.cpp server at {base_url} was not ready after {timeout:.0f} s")


@dataclass
class LocalServer:
    base_url: str
    process: subprocess.Popen
    log: object

    def death(self) -> str | None:
        """Why the server is gone, if it is."""
        if self.process.poll() is None:
            return None
        return f"the llama.cpp server died ({self.process.returncode}): {_log_tail(self.log)}"


@contextmanager
def llama_server(gguf: Path, alias: str, n_ctx: int, n_threads: int | None) -> Iterator[LocalServer]:
    """Run llama_cpp.server on 127.0.0.1 with `gguf`; yield it (base_url, health); stop it afterwards."""
    port = _free_port()
    threads = str(n_threads or physical_cores())
    command = [
        sys.executable, "-m", "healthslm.with_parent", str(os.getpid()), "llama_cpp.server",
        "--model", str(gguf), "--model_alias", alias,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", threads, "--n_threads_batch", threads,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        # with_parent stops the server when this process dies, whichever thread started it
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            server = LocalServer(f"http://127.0.0.1:{port}/v1", process, log)
            _wait_ready(process, server.base_url, log, SERVER_START_TIMEOUT_S)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def local_gguf() -> Path:
    from healthslm.models.loader import gguf_path
    from healthslm.models.registry import resolve_model

    return gguf_path(resolve_model(LOCAL_MODEL_PRESET).gguf)


class Client:
    """Chat completions through the cache; connects (or starts the local server) on the first cache miss."""

    def __init__(self, endpoint: Endpoint, where: str, cache: ResponseCache, stack: ExitStack):
        check_privacy(endpoint, where)
        self.endpoint, self.where, self.cache, self._stack = endpoint, where, cache, stack
        self.model = endpoint.model or local_gguf().stem
        self.usage = Usage()
        self._client = None
        self._server: LocalServer | None = None
        self._lock = threading.Lock()
        self._in_flight: dict[str, threading.Lock] = {}  # one lock per request key being asked

    @property
    def concurrency(self) -> int:
        """Requests in flight: one for the local server, which answers one at a time (a queued request
        would only wait, and could time out and be sent again while the server still works on it)."""
        return self.endpoint.concurrency if self.endpoint.base_url else 1

    def _count(self, _request) -> None:
        with self._lock:
            self.usage.http_requests += 1

    def _connect(self):
        import openai

        with self._lock:
            if self._client is None:
                base_url = self.endpoint.base_url
                if not base_url:
                    server = llama_server(
                        local_gguf(), self.model, self.endpoint.n_ctx, self.endpoint.n_threads
                    )
                    self._server = self._stack.enter_context(server)
                    base_url = self._server.base_url
                self._client = openai.OpenAI(
                    base_url=base_url,
                    api_key=_api_key(self.endpoint, self.where),
                    max_retries=self.endpoint.max_retries,
                    timeout=self.endpoint.timeout_s,
                    http_client=http_client(self.endpoint, self.where, self._count),
                )
            return self._client

    def complete(self, messages: list[dict], **generation) -> Reply:
        key = request_key(self.model, messages, generation)
        with self._lock:
            key_lock = self._in_flight.setdefault(key, threading.Lock())
        with key_lock:  # an identical request in flight is waited for, then read from the cache
            if (entry := self.cache.get(key)) is not None:
                return self._used(Reply(**entry["reply"], key=key, cached=True))
            return self._used(self._ask(key, messages, generation))

    def _ask(self, key: str, messages: list[dict], generation: dict) -> Reply:
        import openai

        for attempt in range(self.endpoint.max_retries + 1):
            try:
                response = self._connect().chat.completions.create(
                    model=self.model, messages=messages, **generation
                )
                break
            except (
                ValueError
            ) as exc:  # a 200 whose body is not JSON (cut short): the client does not retry it
                if attempt == self.endpoint.max_retries:
                    return Reply("", "error", 0, 0, key, cached=False, error=failure_reason(exc))
            except openai.APIError as exc:  # retried by the client already
                if self._server and (death := self._server.death()):
                    raise HealthSLMError(f"{self.where}: {death}") from None
                return Reply("", "error", 0, 0, key, cached=False, error=failure_reason(exc))
        if not response.choices:
            return Reply("", "error", 0, 0, key, cached=False, error="a response without choices")
        choice, usage = response.choices[0], response.usage
        reply = {
            "text": choice.message.content or "",
            "finish_reason": choice.finish_reason or "",
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        }
        self.cache.put({"key": key, "model": self.model, "reply": reply})
        return Reply(**reply, key=key, cached=False)

    def _used(self, reply: Reply) -> Reply:
        with self._lock:
            self.usage.add(reply)
        return reply

    def summary(self) -> dict:
        """Usage and cost; fails when requests were made and none was answered (nothing worth keeping)."""
        usage = self.usage
        if usage.failed and not usage.new_responses and not usage.cache_hits:
            reasons = ", ".join(f"{reason} x{n}" for reason, n in usage.failed.most_common())
            raise HealthSLMError(
                f"{self.where}: the endpoint failed after retries on every request: {reasons}"
            )
        return usage.summary(self.endpoint, self.model, self.cache)


def failure_reason(exc: Exception) -> str:
    """A short, stable reason for a failed request (no URL: it may carry credentials)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if isinstance(cause, HealthSLMError):
            return str(cause).split(": ", 1)[-1]
        return "connection failed"
    return f"malformed response ({type(exc).__name__})"


@contextmanager
def open_client(endpoint: Endpoint, where: str, cache_file: Path) -> Iterator[Client]:
    with ExitStack() as stack:
        cache = ResponseCache(cache_file)
        stack.callback(cache.close)
        yield Client(endpoint, where, cache, stack)


def run_all(jobs: list[Callable[[], object]], concurrency: int, label: str) -> list[object]:
    """Run jobs on `concurrency` threads with a progress bar; results in job order; the first error wins."""
    from rich.progress import Progress

    results: list[object] = [None] * len(jobs)
    pool = ThreadPoolExecutor(concurrency)
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task(label, total=len(jobs))
            futures = {}
            for index, job in enumerate(jobs):
                future = pool.submit(job)
                future.add_done_callback(lambda _: progress.advance(task))
                futures[future] = index
            pending, failed = set(futures), False
            while pending and not failed:
                # short waits: a Ctrl-C that a worker thread received reaches the main thread only when it
                # wakes up, and an untimed wait would sleep until every request in flight has returned
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                failed = any(future.exception() for future in finished)
            done = set(futures) - pending
    except KeyboardInterrupt:  # queued jobs are dropped, and the ones in flight are not waited for
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    for future in pending:
        future.cancel()
    pool.shutdown()
    for future in done:
        if (error := future.exception()) is not None:
            raise error
        results[futures[future]] = future.result()
    return results
