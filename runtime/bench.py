"""Latency benchmarks of the runtime (warm-up, repetitions, medians and tails)."""
from __future__ import annotations

import time

import numpy as np


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": int(len(a))}


def time_calls(fn, reps: int, warmup: int = 20) -> dict:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    return stats(ms)


def latency_bench(rec, history_len: int = 50, reps: int = 300, seed: int = 0) -> dict:
    """End-to-end request latency: full-catalog scoring + MMR top-10, without and with a query."""
    rng = np.random.default_rng(seed)
    ids = [rec.catalog.ids[i] for i in np.flatnonzero(rec.catalog.active)]
    hists = [list(rng.choice(ids, size=min(history_len, len(ids)), replace=False)) for _ in range(16)]
    queries = ["something light and funny from the 90s", "a dark psychological thriller with a twist",
               "animated adventure for kids", "classic western with gunfights"]
    it = iter(range(10**9))
    return {
        f"history {history_len}, MMR top-10": time_calls(
            lambda: rec.recommend(hists[next(it) % 16], k=10, mmr_lambda=0.7), reps),
        f"history {history_len} + query, MMR top-10": time_calls(
            lambda: rec.recommend(hists[next(it) % 16], query=queries[next(it) % 4], k=10, mmr_lambda=0.7), reps),
        "embed 1 query": time_calls(lambda: rec.embed([queries[next(it) % 4]]), reps),
    }
