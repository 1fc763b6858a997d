"""The ``genre bench`` harness: per-stage latency, throughput, cold start, memory and sizes on this machine.

``genre bench --profile all`` plans profile/variant pairs (:func:`plan`) and runs every measurement
in a fresh child process (``python -m genre_edge.bench``) that imports only the runtime, so
start-up time and RSS are what an appliance would see. Numbers are medians and tails after warm-up.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .timing import sample_calls, stats, time_calls

log = logging.getLogger(__name__)

STAGES = ("request", "tokenize", "encode", "user_model", "score", "rerank", "total")
QUERIES = ["something light and funny from the 90s", "a dark psychological thriller with a twist",
           "animated adventure for kids", "classic western with gunfights"]


def _histories(rec, history_len: int, n: int = 16, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    ids = [rec.catalog.ids[i] for i in rec.catalog.active_rows()]
    return [list(rng.choice(ids, size=min(history_len, len(ids)), replace=False)) for _ in range(n)]


def latency_bench(rec, history_len: int = 50, reps: int = 300, seed: int = 0) -> dict:
    """End-to-end request latency: full-catalog scoring + MMR top-10, without and with a query."""
    hists = _histories(rec, history_len, seed=seed)
    it = iter(range(10**9))
    return {
        f"history {history_len}, MMR top-10": time_calls(
            lambda: rec.recommend(hists[next(it) % 16], k=10, mmr_lambda=0.7), reps),
        f"history {history_len} + query, MMR top-10": time_calls(
            lambda: rec.recommend(hists[next(it) % 16], query=QUERIES[next(it) % 4], k=10, mmr_lambda=0.7), reps),
        "embed 1 query": time_calls(lambda: rec.embed([QUERIES[next(it) % 4]]), reps),
    }


def stage_samples(rec, history_len: int = 50, reps: int = 300, warmup: int = 20) -> dict[str, list[float]]:
    """Per-stage milliseconds of ``history + query, MMR top-10`` requests, from the response's timings."""
    hists = _histories(rec, history_len)
    per: dict[str, list[float]] = {s: [] for s in STAGES}
    for r in range(warmup + reps):
        resp = rec.recommend(hists[r % 16], query=QUERIES[r % 4], k=10, mmr_lambda=0.7)
        if r >= warmup:
            for s in STAGES:
                per[s].append(resp.timings_ms[s])
    return per


def history_only_samples(rec, history_len: int = 50, reps: int = 300, warmup: int = 20) -> list[float]:
    """Milliseconds of ``history, MMR top-10`` requests (no query: the encoder does not run)."""
    hists = _histories(rec, history_len, seed=1)
    it = iter(range(10**9))
    return sample_calls(lambda: rec.recommend(hists[next(it) % 16], k=10, mmr_lambda=0.7), reps, warmup)


def throughput_bench(rec, batch_sizes: list[int], seconds: float = 1.0) -> dict:
    """Item texts embedded per second at each batch size (what an on-device catalog import sees)."""
    texts = [f"{t}. {', '.join(c)}" for t, c in zip(rec.catalog.titles, rec.catalog.categories)] or QUERIES
    out = {}
    for b in batch_sizes:
        batches = [texts[(i * b) % len(texts):][:b] or texts[:b] for i in range(64)]
        batches = [x if len(x) == b else (x * b)[:b] for x in batches]
        rec.encoder.embed(batches[0])  # warm-up
        n, t0, i = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds or i < 3:
            ids, mask = rec.encoder.tokenize(batches[i % 64])
            rec.encoder.run(ids, mask)
            n, i = n + b, i + 1
        out[str(b)] = {"texts_per_s": n / (time.perf_counter() - t0), "batches": i}
    return out


def _rss(key: str = "VmRSS") -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def child_main(args: dict) -> dict:
    """One fresh process: load, first answer, then (unless ``cold_only``) the latency runs."""
    t_spawn_to_main = time.monotonic() - args["spawned_at"]
    t0 = time.perf_counter()
    from ..recommender import Recommender

    t_import = time.perf_counter()
    rec = Recommender.load(args["bundle"], args["profile"], variant=args.get("variant"))
    t_load = time.perf_counter()
    rss_load = _rss()
    hist = [rec.catalog.ids[i] for i in range(min(args["history_len"], len(rec.catalog.ids)))]
    first = rec.recommend(hist, k=10, mmr_lambda=0.7)
    out = {"process_start_to_first_answer_s": time.monotonic() - args["spawned_at"],
           "interpreter_start_s": t_spawn_to_main, "import_s": t_import - t0, "load_s": t_load - t_import,
           "first_request_s": time.perf_counter() - t_load, "rss_after_load_mib": rss_load,
           "variant": rec.variant, "profile": rec.profile.name, "n_items": len(rec.catalog),
           "threads": rec.profile.threads.intra_op, "first_items": [r.id for r in first.items]}
    if not args.get("cold_only"):
        reps, hl = args["reps"], args["history_len"]
        out["stage_samples"] = stage_samples(rec, hl, reps)
        out["history_only_samples"] = history_only_samples(rec, hl, reps)
        sizes = [b for b in (1, 8, 32, 64) if b <= rec.profile.max_batch] or [1]
        out["embed_texts_per_s"] = throughput_bench(rec, sizes, args.get("seconds", 1.0))
        out["rss_after_bench_mib"] = _rss()
    out["rss_peak_mib"] = _rss("VmHWM")
    return out


def run_child(args: dict, cache_dir: str | None = None, timeout: float = 1800) -> dict:
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(v, "1")  # numpy's BLAS must not add threads the profile did not ask for
    if cache_dir:
        env["GENRE_CACHE_DIR"] = cache_dir
    args = dict(args, spawned_at=time.monotonic())
    p = subprocess.run([sys.executable, "-m", "genre_edge.bench", json.dumps(args)], env=env, capture_output=True,
                       text=True, timeout=timeout)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        from ..errors import GenreError

        raise GenreError(f"benchmark process failed (exit {p.returncode}): {p.stderr.strip()[-2000:]}")
    return json.loads(line[len("RESULT "):])


@dataclass
class BenchPlan:
    profile: str
    variant: str | None  # None = the profile's choice
    runnable: bool
    reason: str = ""


def plan(bundle, profiles: list[str], all_variants: bool = False) -> list[BenchPlan]:
    """Which profile/variant pairs can run on this machine; the others with the reason."""
    from ..bundle import open_bundle
    import dataclasses

    from ..profile import available_providers, builtin_names, fits, load_profile, machine_info

    b = open_bundle(bundle, verify=False)
    have = b.variants("encoder")
    info = dataclasses.replace(machine_info(), providers=available_providers())  # GPU profiles need onnxruntime-gpu
    names = builtin_names() if profiles == ["all"] else profiles
    out = []
    for name in names:
        prof = load_profile(name)
        ok, why = fits(prof, info)
        if not ok:
            out.append(BenchPlan(prof.name, None, False, why))
            continue
        chosen = next((v for v in (prof.variant, *prof.fallback_variants) if v in have), None)
        if chosen is None:
            out.append(BenchPlan(prof.name, None, False, f"bundle has none of {prof.variant}, "
                                                         f"{', '.join(prof.fallback_variants)}"))
            continue
        for v in (have if all_variants else [chosen]):
            note = "" if v == prof.variant else (f"profile wants {prof.variant}, bundle lacks it" if v == chosen
                                                 else "extra variant")
            out.append(BenchPlan(prof.name if Path(str(name)).suffix != ".toml" else str(name), v, True, note))
    return out


def bench_round(bundle, p: BenchPlan, reps: int, history_len: int, starts: int, cache_dir: str) -> dict:
    """One round for one profile/variant: ``starts`` cold-start processes, then one process that
    measures ``reps`` requests (raw samples; :func:`aggregate` pools the rounds)."""
    args = {"bundle": str(bundle), "profile": p.profile, "variant": p.variant, "reps": reps,
            "history_len": history_len}
    colds = [run_child(dict(args, cold_only=True), cache_dir) for _ in range(starts)]
    return {"colds": colds, "full": run_child(args, cache_dir)}


def aggregate(bundle, p: BenchPlan, rounds: list[dict]) -> dict:
    """Pool the rounds of one profile/variant: latency percentiles over every request of every round,
    cold start over every fresh process (the very first one = first boot, empty optimized-model cache)."""
    from ..bundle import open_bundle

    fulls = [r["full"] for r in rounds]
    colds = [c for r in rounds for c in r["colds"]]
    out = {k: fulls[0][k] for k in ("variant", "profile", "n_items", "threads", "first_items")}
    out["stages_ms"] = {s: stats([x for f in fulls for x in f["stage_samples"][s]]) for s in STAGES}
    hist_only = stats([x for f in fulls for x in f["history_only_samples"]])
    out["latency_ms"] = {"history, MMR top-10": hist_only, "history + query, MMR top-10": out["stages_ms"]["total"]}
    out["throughput"] = {
        "requests_per_s": {k: 1000.0 / v["mean"] for k, v in out["latency_ms"].items()},
        "embed_texts_per_s": {b: {"texts_per_s": float(np.median([f["embed_texts_per_s"][b]["texts_per_s"]
                                                                  for f in fulls]))}
                              for b in fulls[0]["embed_texts_per_s"]}}
    out["rss_peak_mib"] = max(f["rss_peak_mib"] for f in fulls)
    out["rss_after_bench_mib"] = float(np.median([f["rss_after_bench_mib"] for f in fulls]))
    keys = ("process_start_to_first_answer_s", "import_s", "load_s", "first_request_s", "rss_after_load_mib")
    out["cold_start"] = {"first_boot": {k: colds[0][k] for k in keys},
                         "median": {k: float(np.median([c[k] for c in colds[1:] or colds])) for k in keys},
                         "runs": len(colds)}
    b = open_bundle(bundle, verify=False)
    enc = b.model("encoder", out["variant"])
    out["sizes_bytes"] = {"bundle": b.size(), "encoder": b.manifest.files[enc.file].bytes, "encoder_file": enc.file}
    out["bundle_sha256"] = _bundle_hash(b)
    out["rounds"] = len(rounds)
    out["note"] = p.reason
    return out


def _bundle_hash(b) -> str:
    import hashlib

    from ..bundle import manifest_json

    files = {k: manifest_json(v) for k, v in b.manifest.files.items()}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def markdown(rows: list[dict], machine: dict, command: str) -> str:
    from .machine import machine_markdown

    lines = ["# genre bench", "", machine_markdown(machine), "", f"Command: `{command}`", "",
             "Each row: fresh processes importing only the runtime; latency = `history 50 + query, MMR top-10` "
             "requests over the whole catalog after warm-up (ms; p50 / p95 / p99), pooled over "
             f"{max((r.get('rounds', 1) for r in rows if not r.get('skipped')), default=1)} interleaved rounds "
             "(every row runs once per round, so drift on a busy machine lands on every row alike).", "",
             "## End to end and per stage (p50 ms)", "",
             "| profile | variant | threads | total p50 | p95 | p99 | " + " | ".join(STAGES[:-1]) + " |",
             "|---|---|---|---|---|---|" + "---|" * (len(STAGES) - 1)]
    for r in rows:
        if r.get("skipped"):
            continue
        st = r["stages_ms"]
        lines.append(f"| {r['profile']} | {r['variant']} | {r['threads']} | {st['total']['p50']:.3f} | "
                     f"{st['total']['p95']:.3f} | {st['total']['p99']:.3f} | "
                     + " | ".join(f"{st[s]['p50']:.3f}" for s in STAGES[:-1]) + " |")
    lines += ["", "## Requests, throughput, cold start, memory, size", "",
              "| profile | variant | history-only p50 ms | req/s (history+query) | embed texts/s by batch | "
              "start to first answer s (first boot) | RSS after load MiB | peak RSS MiB | encoder MB | bundle MB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            continue
        lat = r["latency_ms"]
        hk = next(k for k in lat if "MMR" in k and "query" not in k)
        qk = next(k for k in lat if "query" in k)
        tp = ", ".join(f"{b}: {v['texts_per_s']:.0f}" for b, v in r["throughput"]["embed_texts_per_s"].items())
        cs = r["cold_start"]
        lines.append(f"| {r['profile']} | {r['variant']} | {lat[hk]['p50']:.3f} | "
                     f"{r['throughput']['requests_per_s'][qk]:.0f} | {tp} | "
                     f"{cs['median']['process_start_to_first_answer_s']:.3f} "
                     f"({cs['first_boot']['process_start_to_first_answer_s']:.3f}) | "
                     f"{cs['median']['rss_after_load_mib']:.1f} | {r['rss_peak_mib']:.1f} | "
                     f"{r['sizes_bytes']['encoder'] / 1e6:.2f} | {r['sizes_bytes']['bundle'] / 1e6:.2f} |")
    skipped = [r for r in rows if r.get("skipped")]
    if skipped:
        lines += ["", "## Skipped here", ""] + [f"- `{r['profile']}`: {r['reason']}" for r in skipped]
    notes = [r for r in rows if not r.get("skipped") and r.get("note")]
    if notes:
        lines += ["", "Notes: " + "; ".join(f"{r['profile']}/{r['variant']}: {r['note']}" for r in notes)]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> bool:
    """PNG: stacked per-stage p50 latency by profile/variant (needs matplotlib, the 'bench' extra)."""
    from .report import pyplot, save_png

    plt = pyplot()
    ran = [r for r in rows if not r.get("skipped")]
    if plt is None or not ran:
        return False
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(ran) + 1.6))
    labels = [f"{r['profile']} / {r['variant']}" for r in ran]
    left = np.zeros(len(ran))
    for s in STAGES[:-1]:
        v = np.array([r["stages_ms"][s]["p50"] for r in ran])
        ax.barh(labels, v, left=left, label=s)
        left += v
    for i, r in enumerate(ran):
        ax.text(left[i], i, f"  p99 {r['stages_ms']['total']['p99']:.2f}", va="center", fontsize=8)
    ax.set_xlabel("ms per request, p50 by stage (history 50 + query, MMR top-10)")
    ax.set_title("genre bench: latency by profile and variant")
    ax.legend(fontsize=7, ncol=3)
    ax.set_xlim(0, left.max() * 1.35)
    fig.tight_layout()
    save_png(fig, path)
    return True
