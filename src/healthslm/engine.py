"""Can llama.cpp run on this CPU? A few tokens through the embedded GGUF in a child process.

A llama.cpp build with instructions this CPU lacks (a native build from another machine, or AMX in a VM that
advertises it) dies with SIGILL; in a child process that becomes one line instead of a crash mid-pipeline.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from healthslm.errors import HealthSLMError

_PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, n_threads=1, verbose=False)
out = llm("The capital of France is", max_tokens=4, temperature=0.0)
print(llama_cpp.llama_print_system_info().decode().strip())
print(repr(out["choices"][0]["text"]))
"""


def check_engine(timeout_s: float = 300) -> str:
    """Generate 4 tokens with llama.cpp in a child process; return its system info line."""
    from healthslm.llm import local_gguf

    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, str(local_gguf())],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise HealthSLMError(f"llama.cpp did not generate 4 tokens in {timeout_s:.0f} s") from None
    if result.returncode != 0:
        code = result.returncode
        why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        tail = (result.stderr.strip().splitlines() or [""])[-1][:200]
        hint = (
            "; the build uses instructions this CPU cannot run: `rm .venv/llama-cpp-build && bash setup.sh`"
            " rebuilds it for this CPU"
            if code == -signal.SIGILL
            else ""
        )
        raise HealthSLMError(f"llama.cpp cannot run here ({why}{': ' + tail if tail else ''}){hint}")
    info, text = result.stdout.strip().splitlines()[-2:]
    if "AMX_INT8 = 1" in info:
        raise HealthSLMError(f"llama.cpp was built with AMX, which setup never enables: {info}")
    return f"{info} | generated {text}"
