"""`python -m healthslm.with_parent PID MODULE [ARGS…]`: run MODULE as `__main__`, and stop it when process
PID, its parent, is gone, even killed by SIGKILL (the local llama.cpp server must not outlive its stage).

Why not in the parent: `preexec_fn` may deadlock between fork and exec when the parent runs threads (CPython's
subprocess docs), and PR_SET_PDEATHSIG fires when the *thread* that started the child ends, not the process.
A watcher thread in the child polls its parent id instead: safe with threads, and it works on macOS too.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

POLL_S = 0.5
GRACE_S = 10.0  # after SIGTERM, the time a server gets to stop by itself


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(143)


def main() -> None:
    parent, module, *args = sys.argv[1:]
    threading.Thread(target=_watch, args=(int(parent),), daemon=True, name="with-parent").start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
