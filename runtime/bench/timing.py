"""Timing helpers shared by every benchmark: warm up, repeat, report medians and tails (milliseconds)."""
from __future__ import annotations

import time

import numpy as np


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": int(len(a))}


def sample_calls(fn, reps: int, warmup: int = 20) -> list[float]:
    """Milliseconds of each of ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    return ms


def time_calls(fn, reps: int, warmup: int = 20) -> dict:
    return stats(sample_calls(fn, reps, warmup))
