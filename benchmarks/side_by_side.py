"""What the side-by-side benchmarks share: one timed call, alternating comparison, the result table.

Each benchmark builds "ours" and "transformers" on the same weights and gives `compare` one zero-argument step per
implementation; calls alternate (ours, theirs, ours, ...) after a warmup, so drifts of clock or load hit both
alike, and the table reports medians and ours/transformers (below 1: ours is faster).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

Step = Callable[[], None]
Autocast = Callable[[], AbstractContextManager]
# "thread": CPU time of the calling thread, for single-threaded CPU runs on a shared machine: time spent waiting
# for the other jobs' processes is not billed (it is with "wall", which a GPU run must use).
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


@dataclass
class Row:
    case: str
    batch: int
    ours_ms: float
    theirs_ms: float
    ours_mib: float | None = None
    theirs_mib: float | None = None


def timed_call(step: Step, device: torch.device, clock: str = "wall") -> tuple[float, float | None]:
    """Milliseconds of one call and, on CUDA, its peak allocation in MiB above what was allocated at its start.
    `clock` is a key of `CLOCKS`."""
    cuda = device.type == "cuda"
    now = CLOCKS[clock]
    if cuda:
        torch.cuda.synchronize()  # kernels of the previous call must not be billed to this one
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    start = now()
    step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = (now() - start) * 1e3
    return elapsed, (torch.cuda.max_memory_allocated() - resident) / 2**20 if cuda else None


def compare(case: str, batch: int, ours: Step, theirs: Step, args, device: torch.device) -> Row:
    """Warm up both, then alternate timed calls; medians (and max peak memory) per implementation."""
    for _ in range(args.warmup):
        ours()
        theirs()
    clock = getattr(args, "clock", "wall")
    calls = [[timed_call(step, device, clock) for step in (ours, theirs)] for _ in range(args.repeats)]
    ours_calls, theirs_calls = zip(*calls)  # each a tuple of (ms, MiB or None)
    row = Row(case, batch, statistics.median(c[0] for c in ours_calls), statistics.median(c[0] for c in theirs_calls))
    if device.type == "cuda":
        row.ours_mib, row.theirs_mib = max(c[1] for c in ours_calls), max(c[1] for c in theirs_calls)
    return row


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def format_table(rows: list[Row], markdown: bool) -> str:
    memory = any(row.ours_mib is not None for row in rows)
    columns = ["case", "batch", "ours ms", "transformers ms", "ours/transformers"]
    columns += ["ours peak MiB", "transformers peak MiB"] if memory else []
    lines = [columns] + [
        [r.case, str(r.batch), f"{r.ours_ms:.1f}", f"{r.theirs_ms:.1f}", f"{r.ours_ms / r.theirs_ms:.2f}"]
        + ([f"{r.ours_mib:.0f}", f"{r.theirs_mib:.0f}"] if memory else []) for r in rows
    ]
    if markdown:
        lines.insert(1, ["---"] + ["---:"] * (len(columns) - 1))
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(map(len, column)) for column in zip(*lines)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)
