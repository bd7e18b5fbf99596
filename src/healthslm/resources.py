"""Resource measurement shared by the stages: peak resident memory of a process, or of one piece of work."""

from __future__ import annotations

import os
import platform
import re
import resource
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _cpuinfo(path: Path = CPUINFO) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU's model name: speeds and their ratios hold for the machine that measured them."""
    match = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.M)
    return match.group(1).strip() if match else platform.processor() or platform.machine()


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on (taskset, a container's cpuset; all of them otherwise)."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def physical_cores(cpuinfo: Path = CPUINFO, allowed: set[int] | None = None) -> int:
    """Cores this process may run on, not hardware threads: llama.cpp decodes fastest with one thread per
    physical core (two threads on one core share its load units), and a process kept to fewer CPUs than the
    machine has (taskset, a container's cpuset, a pinned test worker) must not start a thread per core it
    cannot use. Falls back to the allowed logical count where /proc/cpuinfo says nothing."""
    allowed = allowed_cpus() if allowed is None else allowed
    cores = set()
    for block in _cpuinfo(cpuinfo).split("\n\n"):
        fields = dict(re.findall(r"^(processor|physical id|core id)\s*:\s*(\d+)", block, re.M))
        if "core id" in fields and int(fields.get("processor", -1)) in allowed:
            cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores) or len(allowed) or 1


def process_seconds() -> float | None:
    """Wall seconds since this process started (its imports included), from /proc; None elsewhere."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)


def children_peak_rss_mb() -> float:
    """The largest peak resident memory among this process's finished children (llama.cpp servers,
    workers); 0 without any."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def peak_rss_mb() -> float:
    """This process's own peak resident memory. Linux carries ru_maxrss over fork and exec (a stage started by
    `dvc repro`, or a spawned worker, would report its parent's), while VmHWM belongs to this memory map."""
    if _STATUS.exists() and (match := re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.M)):
        return round(int(match.group(1)) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class PeakMemory:
    """Peak resident memory of the work inside `with PeakMemory() as peak:` -> `peak.mb`.

    Linux resets the high-water mark on writing 5 to /proc/self/clear_refs, so the peak is this work's
    (with what the process already holds, e.g. the model it uses). Elsewhere it is the process's peak,
    and `scope` says so."""

    def __init__(self) -> None:
        self.mb: float | None = None
        self.scope = "process"

    def __enter__(self) -> PeakMemory:
        try:
            _CLEAR_REFS.write_text("5")
            self.scope = "work"
        except OSError:
            self.scope = "process"
        return self

    def __exit__(self, *exc) -> None:
        self.mb = peak_rss_mb()
