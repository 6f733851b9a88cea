"""How many jobs, and how many renders, one worker process runs side by side.

A job slot mostly waits: on a provider's answer, on ffmpeg, on an upload. Its own memory is small
(the process, two connections, a few stills in flight), so the number of slots follows the CPUs
(ffmpeg, espeak-ng and Pillow work on them) and the memory left after the renders' share. A render
is the memory peak (shared.pipeline.render.RENDER_PEAK_MB, measured by `python -m bench.render`),
so renders get their own, smaller bound: a worker never starts more than its memory holds, nor
more than its CPUs keep busy.

The limits are read the way a container sees them: the cgroup's memory limit and CPU quota
(Render's instance types are cgroups), else the machine's.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from shared.config import Settings

PROCESS_BASE_MB = 150
"""The worker process itself: Python, Pillow, pg8000, requests, the providers' clients."""
SLOT_MB = 60
"""One job slot besides its render: its connections, the stills and voices it holds."""
SLOTS_PER_CPU = 4
"""Job slots per CPU: a slot waits on the network or a child process most of the time."""
MAX_DERIVED_SLOTS = 16
"""A derived default never passes this; WORKER_CONCURRENCY may."""

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Capacity:
    """What one worker process runs at once, and what it was derived from (for the log)."""

    slots: int
    render_slots: int
    memory_mb: int
    cpus: float
    derived: bool

    def describe(self) -> str:
        source = "derived" if self.derived else "set"
        return (
            f"slots={self.slots} render_slots={self.render_slots} ({source}: "
            f"memory_mb={self.memory_mb} cpus={self.cpus:g})"
        )


def memory_mb(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The memory this process may use: its cgroup's limit (v2 `memory.max`, v1
    `memory.limit_in_bytes`), else the machine's total."""
    for limit_file in (cgroup_root / "memory.max", cgroup_root / "memory/memory.limit_in_bytes"):
        try:
            raw = limit_file.read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # "max" or a huge number: no limit
            return int(raw) // (1024 * 1024)
    return _machine_memory_mb()


def _machine_memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024


def cpus(cgroup_root: Path = CGROUP_ROOT) -> float:
    """The CPUs this process may use: its cgroup's quota (v2 `cpu.max`, e.g. `50000 100000`
    for half a CPU), else the CPUs it may be scheduled on."""
    available = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return available
    if quota == "max":
        return available
    return min(available, int(quota) / int(period))


def render_slots_for(memory: int, render_peak_mb: int, cpu_count: float) -> int:
    """Renders that fit beside the process, and no more than its CPUs: a render keeps about a
    CPU busy (x264's threads and a scene's process), so one more only shares the CPUs and holds a
    job slot that could be waiting on a provider for another job. At least one (a worker that
    cannot render at all is of no use; the README names the plans where one 1080p render is
    tight)."""
    by_memory = (memory - PROCESS_BASE_MB) // render_peak_mb
    return max(1, min(by_memory, math.ceil(cpu_count)))


def slots_for(memory: int, cpu_count: float, render_peak_mb: int) -> int:
    """Job slots: SLOTS_PER_CPU per CPU, as far as the memory left after one render holds them."""
    by_cpu = math.ceil(SLOTS_PER_CPU * cpu_count)
    by_memory = (memory - PROCESS_BASE_MB - render_peak_mb) // SLOT_MB
    return max(1, min(by_cpu, by_memory, MAX_DERIVED_SLOTS))


def capacity(
    settings: Settings,
    render_peak_mb: int,
    memory: int | None = None,
    cpu_count: float | None = None,
) -> Capacity:
    """WORKER_CONCURRENCY and RENDER_CONCURRENCY when set, else derived from the process's
    memory and CPUs; the renders never outnumber the slots."""
    memory = memory_mb() if memory is None else memory
    cpu_count = cpus() if cpu_count is None else cpu_count
    slots = settings.worker_concurrency or slots_for(memory, cpu_count, render_peak_mb)
    renders = settings.render_concurrency or render_slots_for(memory, render_peak_mb, cpu_count)
    return Capacity(
        slots=slots,
        render_slots=min(renders, slots),
        memory_mb=memory,
        cpus=cpu_count,
        derived=not settings.worker_concurrency,
    )
