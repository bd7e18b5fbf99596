"""User-facing errors: the CLI prints their message on one line and exits 1, without a traceback; Ctrl-C is
one line and exit status 130."""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn


class HealthSLMError(Exception):
    """A problem the user can fix (bad params, bad data, unreachable host); the message says how."""


def exit_interrupted(what: str) -> NoReturn:
    """Ctrl-C, after the interrupt has unwound the main thread (temporary outputs removed, the local server
    stopped): one line, exit status 130. os._exit, because interpreter exit would wait for worker threads
    still inside a request; finished responses are in the cache already, so a re-run resumes."""
    print(
        f"interrupted: {what} stopped; outputs are written whole or not at all, run again to resume",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def exit_quietly_on_interrupt() -> None:
    """In a worker process (initializer): Ctrl-C, which the terminal sends to the whole process group, ends
    it without its own traceback; the parent says the one line."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
