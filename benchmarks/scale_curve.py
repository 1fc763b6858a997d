"""Scale curve: request latency and memory as the catalog grows (1k -> 1M items) and as history grows.

Synthetic item vectors (real catalog rows plus noise, re-normalised) are added to a real bundle's
catalog in memory; every catalog size runs in a fresh process (one thread) so RSS is its own.
Both catalog-scoring approaches are timed: numpy float32 (``catalog_scoring = "fp32"``) and the
index the profile builds (``--index auto``: the 8-bit index, pre-packed MatMulInteger, or where this CPU's
8-bit kernel saturates the 4-bit one, MatMulNBits; ``--index int8`` / ``int4`` to choose), with the pieces
of a request timed apart so the table says where time goes.

    python benchmarks/scale_curve.py --bundle runs/full/bundle
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from genre_edge.bench.machine import machine, machine_markdown

log = logging.getLogger("scale_curve")
SIZES = (1_000, 10_000, 100_000, 1_000_000)
HISTORIES = (10, 50, 100, 200, 500)
TARGETS_MS = {100_000: 5.0, 1_000_000: 50.0}  # end-to-end p50, one thread (issue 6)


def _time(fn, reps, warmup=5):
    from genre_edge.bench.timing import time_calls

    return time_calls(fn, reps, warmup)


def _p(ms):
    from genre_edge.bench.timing import stats

    return stats(ms)


def _rss(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def grow(rec, n: int, seed: int = 0) -> None:
    """Replace ``rec``'s catalog with ``n`` items: the real ones first, then synthetic neighbours of them.

    A catalog never shrinks below the bundle's (removed items are masked, and the CF tables index
    them), so sizes below it run on the real catalog alone."""
    from genre_edge.catalog import Catalog

    c = rec.catalog
    n = max(n, c.n_bundle)
    real = c.n_bundle
    extra = n - real
    rng = np.random.default_rng(seed)
    src = rng.integers(0, c.n_bundle, size=extra)
    emb = np.empty((n, c.emb.shape[1]), np.float32)
    emb[:real] = c.emb[:real]
    for a in range(0, extra, 100_000):  # in blocks: a 1M x 384 noise matrix at once would double peak RSS
        b = min(extra, a + 100_000)
        e = c.emb[src[a:b]] + rng.standard_normal((b - a, emb.shape[1]), np.float32) * 0.03
        emb[real + a: real + b] = e / np.linalg.norm(e, axis=1, keepdims=True)
    pick = np.concatenate([np.arange(real), src]).astype(np.int64)
    ids = c.ids[:real] + [f"syn{i}" for i in range(extra)]
    rec.catalog = Catalog(ids, [c.titles[i] for i in pick], [c.categories[i] for i in pick], c.years[pick],
                          c.first_seen[pick], emb, c.pop[pick] * 0.5)


def grow_lean(rec, n: int, folder: Path, seed: int = 0) -> None:
    """As :func:`grow`, but the catalog is what a lean load of an n-item bundle holds: int8 rows in a
    memory-mapped .npy file (written block by block: no float32 copy of the catalog ever exists) and
    one scale per row (:class:`~genre_edge.catalog_rows.Int8Rows`)."""
    from genre_edge.catalog import Catalog
    from genre_edge.catalog_index import quantize_rows
    from genre_edge.catalog_rows import Int8Rows

    c = rec.catalog
    n = max(n, c.n_bundle)
    real, d = c.n_bundle, c.emb.shape[1]
    rng = np.random.default_rng(seed)
    src = rng.integers(0, real, size=n - real)
    pick = np.concatenate([np.arange(real), src]).astype(np.int64)
    path = folder / "rows.int8.npy"
    q = np.lib.format.open_memmap(path, mode="w+", dtype=np.int8, shape=(n, d))
    scale = np.empty(n, np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        e = np.asarray(c.emb[pick[a:b]], np.float32)
        if b > real:
            noisy = slice(max(0, real - a), b - a)
            e[noisy] += rng.standard_normal((len(e[noisy]), d), np.float32) * 0.03
            e[noisy] /= np.linalg.norm(e[noisy], axis=1, keepdims=True)
        q[a:b], scale[a:b] = quantize_rows(e)
    q.flush()
    del q
    ids = c.ids[:real] + [f"syn{i}" for i in range(n - real)]
    rec.catalog = Catalog(ids, [c.titles[i] for i in pick], [c.categories[i] for i in pick], c.years[pick],
                          c.first_seen[pick], Int8Rows(np.load(path, mmap_mode="r"), scale, f"scale-{n}-{seed}"),
                          c.pop[pick] * 0.5)


def child(args: dict) -> dict:
    from genre_edge.catalog_index import CatalogScorer, index_bits, top_n
    from genre_edge.recommender import Recommender
    from genre_edge.catalog import Filters
    from genre_edge.rerank import Rerank, rerank
    from genre_edge.scorer import blend

    n, reps = args["n"], args["reps"]
    rec = Recommender.load(args["bundle"], args["profile"])
    rss0 = _rss()
    tmp = None
    if args.get("lean"):
        import ctypes
        import gc
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        os.environ["GENRE_CACHE_DIR"] = tmp.name  # the int8 index file of this run (384 MB at 1M items)
        grow_lean(rec, n, Path(tmp.name))
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # the block-wise build's freed buffers
    else:
        grow(rec, n)
    cat = rec.catalog
    n = len(cat.ids)
    rss_catalog = _rss()
    rng = np.random.default_rng(1)
    real_ids = cat.ids[: cat.n_bundle]
    hist = list(rng.choice(real_ids, size=min(50, len(real_ids)), replace=False))
    index = args.get("index") or "auto"
    index = index if index != "auto" else ("int4" if index_bits("auto", cat.emb.shape[1]) == 4 else "int8")
    out = {"n": n, "rss_bundle_mib": rss0, "rss_catalog_mib": rss_catalog, "index": index}
    for mode in ((index,) if args.get("lean") else ("fp32", index)):
        rec.catalog_scorer = CatalogScorer(mode, 1)
        t = time.perf_counter()
        rec.rebuild_index()
        build_s = time.perf_counter() - t
        r = {"index_build_s": build_s, "rss_after_index_mib": _rss()}
        if args.get("lean"):  # a second start: the scoring model comes from the cache file
            t = time.perf_counter()
            rec.rebuild_index()
            r["index_cached_s"] = time.perf_counter() - t
            r["rss_after_cached_index_mib"] = _rss()
        r["recommend_ms"] = _time(lambda: rec.recommend(hist, k=10, mmr_lambda=0.7), reps)
        r["recommend_query_ms"] = _time(lambda: rec.recommend(hist, query="a dark thriller", k=10, mmr_lambda=0.7),
                                        reps)
        r["rss_after_requests_mib"] = _rss()  # serving: requests gather a few rows of a lean catalog
        # the pieces, timed apart (same order as a request)
        hidx = np.array([cat.index[h] for h in hist], np.int64)
        u, _ = rec.user_model(cat.emb[hidx])
        preset = rec.presets["hybrid"]
        r["content_ms"] = _time(lambda: rec.catalog_scorer.scores(cat, u), reps)
        content = rec.catalog_scorer.scores(cat, u)
        r["cf_ms"] = _time(lambda: rec.cf.scores(hidx, len(cat.ids)), reps)
        cf = rec.cf.scores(hidx, len(cat.ids))
        r["blend_mask_ms"] = _time(lambda: (blend(content, cf, cat.pop, preset), cat.mask(Filters())), reps)
        scores, mask = blend(content, cf, cat.pop, preset), cat.mask(Filters())
        r["topk_blocked_ms"] = _time(lambda: top_n(scores, mask, 200), reps)
        kth = min(200, int(mask.sum())) - 1
        r["topk_argpartition_ms"] = _time(lambda: np.argpartition(-scores[np.flatnonzero(mask)], kth)[: kth + 1], reps)
        pool = top_n(scores, mask, 200)
        pool = pool[np.argsort(-scores[pool])]
        r["rerank_mmr_ms"] = _time(lambda: rerank(scores, pool, cat, Rerank(mmr_lambda=0.7), 10), reps)
        if mode == index:
            ref = cat.emb @ u
            r["index_vs_fp32"] = {"max_abs_diff": float(np.abs(content - ref).max()),
                                 "top200_overlap": len(set(np.argsort(-content)[:200]) & set(np.argsort(-ref)[:200]))
                                 / 200.0}
        out[mode] = r
    if args.get("histories"):
        rec.catalog_scorer = CatalogScorer("auto", 1)
        rec.rebuild_index()
        hl = {}
        for h in HISTORIES:
            hh = list(rng.choice(real_ids, size=min(h, len(real_ids)), replace=False))
            while len(hh) < h:  # longer than the real catalog: repeat (re-watches), as a long log would
                hh += hh[: h - len(hh)]
            stages = {s: [] for s in ("user_model", "score", "rerank", "total")}
            for i in range(reps + 5):
                resp = rec.recommend(hh, k=10, mmr_lambda=0.7)
                if i >= 5:
                    for s in stages:
                        stages[s].append(resp.timings_ms[s])
            hl[str(h)] = {s: _p(v) for s, v in stages.items()}
        out["history"] = hl
    out["rss_peak_mib"] = _rss("VmHWM")
    out["rss_end_mib"] = _rss()
    out["lean"] = bool(args.get("lean"))
    return out


def run_child(args: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], env=env, capture_output=True,
                       text=True, timeout=3600)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"scale child failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(line[7:])


def markdown(res: dict) -> str:
    lean = any(r.get("lean") for r in res["sizes"])
    names = sorted({r["index"] for r in res["sizes"]})
    ix = "/".join(names)
    L = ["# Scale curve: catalog size and history length" + (" (lean catalog: int8 rows memory-mapped)" if lean else ""),
         "", machine_markdown(res["machine"]), "",
         f"Command: `{res['command']}`", "",
         f"Bundle `{res['bundle']}` ({res['n_real']} real items; the rest are synthetic neighbours of them), profile "
         f"`{res['profile']}`, one thread, history 50, MMR top-10 over a 200-item pool; p50 ms of {res['reps']} "
         "requests after warm-up, each size in a fresh process.", "",
         "## End to end (p50 ms) and memory", "",
         f"Index: `{ix}` (" + ", ".join({"int8": "8-bit rows, pre-packed MatMulInteger", "int4": "4-bit rows in "
                                           "blocks of 32, MatMulNBits"}[x] for x in names) + ").", "",
         f"| items | fp32 p50 | fp32 p99 | **{ix} index p50** | {ix} p99 | + query ({ix}) | target | index build s | "
         f"RSS catalog MiB | RSS with index MiB | RSS serving MiB | {ix} top-200 overlap |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    na = {"recommend_ms": {"p50": float("nan"), "p99": float("nan")}, "content_ms": {"p50": float("nan")}}
    for r in res["sizes"]:
        f, i = r.get("fp32", na), r[r["index"]]  # a lean run has no float32 catalog to time
        tgt = TARGETS_MS.get(r["n"])
        met = "" if tgt is None else (f"< {tgt:g} ({'met' if i['recommend_ms']['p50'] < tgt else '**missed**'})")
        L.append(f"| {r['n']:,} | {f['recommend_ms']['p50']:.3f} | {f['recommend_ms']['p99']:.3f} | "
                 f"**{i['recommend_ms']['p50']:.3f}** | {i['recommend_ms']['p99']:.3f} | "
                 f"{i['recommend_query_ms']['p50']:.3f} | {met} | {i['index_build_s']:.2f} | "
                 f"{r['rss_catalog_mib']:.0f} | {i['rss_after_index_mib']:.0f} | "
                 f"{i.get('rss_after_requests_mib', float('nan')):.0f} | {i['index_vs_fp32']['top200_overlap']:.3f} |")
    if lean:
        L += ["", "Lean catalog: the int8 rows stay memory-mapped (only gathered rows are read), the index is "
              "built from them as stored and kept in the cache folder; a second start opens it from there:", ""]
        for r in res["sizes"]:
            i = r[r["index"]]
            L.append(f"- {r['n']:,} items: index first build {i['index_build_s']:.2f} s, from the cache "
                     f"{i.get('index_cached_s', float('nan')):.2f} s; RSS after load {i['rss_after_index_mib']:.0f} MiB, "
                     f"serving {i.get('rss_after_requests_mib', float('nan')):.0f} MiB, peak {r['rss_peak_mib']:.0f} MiB "
                     "(the first build reads every row once)")
    L += ["", "## Where the time goes (p50 ms per piece)", "",
          f"| items | content fp32 | content {ix} | CF | blend + filters | top-200 argpartition | top-200 blocked | "
          "MMR re-rank |", "|---|---|---|---|---|---|---|---|"]
    for r in res["sizes"]:
        f, i = r.get("fp32", na), r[r["index"]]
        L.append(f"| {r['n']:,} | {f['content_ms']['p50']:.3f} | {i['content_ms']['p50']:.3f} | "
                 f"{i['cf_ms']['p50']:.3f} | {i['blend_mask_ms']['p50']:.3f} | {i['topk_argpartition_ms']['p50']:.3f} | "
                 f"{i['topk_blocked_ms']['p50']:.3f} | {i['rerank_mmr_ms']['p50']:.3f} |")
    for r in res["sizes"]:
        if "history" in r:
            L += ["", f"## History length ({r['n']:,} items, catalog scoring auto; p50 ms)", "",
                  "| history | user model | score (content + CF + top-k) | re-rank | total | total p99 |",
                  "|---|---|---|---|---|---|"]
            for h, v in r["history"].items():
                L.append(f"| {h} | {v['user_model']['p50']:.3f} | {v['score']['p50']:.3f} | {v['rerank']['p50']:.3f} | "
                         f"{v['total']['p50']:.3f} | {v['total']['p99']:.3f} |")
    return "\n".join(L + [""] + res.get("findings", []) + [""])


def chart(res: dict, path: Path) -> None:
    from genre_edge.bench.report import pyplot, save_png

    plt = pyplot()
    if plt is None:
        return

    ns = [r["n"] for r in res["sizes"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for mode, lab in (("fp32", "numpy float32"), ("int8", "int8 index (MatMulInteger)"),
                      ("int4", "4-bit index (MatMulNBits)")):
        if any(mode not in r for r in res["sizes"]):
            continue
        a1.plot(ns, [r[mode]["recommend_ms"]["p50"] for r in res["sizes"]], "o-", label=f"{lab} p50")
    for n, t in TARGETS_MS.items():
        a1.plot([n], [t], "r_", markersize=18)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("catalog items")
    a1.set_ylabel("ms per request (1 thread)")
    a1.set_title("catalog size (red: target)")
    a1.legend(fontsize=8)
    hist = next((r for r in res["sizes"] if "history" in r), None)
    if hist:
        hs = [int(h) for h in hist["history"]]
        for s in ("user_model", "score", "rerank", "total"):
            a2.plot(hs, [hist["history"][str(h)][s]["p50"] for h in hs], "o-", label=s)
        a2.set_xlabel("history length")
        a2.set_title(f"history length ({hist['n']:,} items)")
        a2.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--child":
        print("RESULT " + json.dumps(child(json.loads(sys.argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--profile", default="auto", help="device profile: a name, a TOML file, or auto (the one this "
                    "machine's CPU class gets: `genre profile detect`)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--history-at", type=int, default=100_000, help="catalog size of the history curve")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--index", choices=("auto", "int8", "int4"), default="auto",
                    help="the catalog index timed beside float32 (auto: the one this CPU gets)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--lean", action="store_true",
                    help="the catalog as a lean load holds it: int8 rows memory-mapped + scales, int8 index only")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sizes = [int(s) for s in a.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes must be comma-separated integers, got {a.sizes!r}")
    if not sizes or min(sizes) < 10 or max(sizes) > 5_000_000 or a.reps < 5:
        ap.error("--sizes must be in 10..5000000 and --reps >= 5")
    if not (Path(a.bundle) / "manifest.json").is_file():
        ap.error(f"--bundle {a.bundle}: no manifest.json there")
    from genre_edge.errors import GenreError
    from genre_edge.profile import load_profile

    try:
        profile = load_profile(a.profile).name  # what "auto" resolves to, for the report
    except GenreError as exc:
        ap.error(f"--profile {a.profile}: {exc}")
    rows = []
    for n in sizes:
        log.info("catalog %d items ...", n)
        rows.append(run_child({"bundle": a.bundle, "profile": a.profile, "n": n, "reps": a.reps,
                               "histories": n == a.history_at, "lean": a.lean, "index": a.index}))
    from genre_edge.bundle import open_bundle

    res = {"machine": machine(), "bundle": Path(a.bundle).resolve().name, "profile": profile, "reps": a.reps,
           "n_real": len(open_bundle(a.bundle, verify=False).load_json(
               open_bundle(a.bundle, verify=False).manifest.catalog.items)["ids"]),
           "sizes": rows, "command": "python benchmarks/scale_curve.py " + " ".join(
               argv if argv is not None else sys.argv[1:])}
    from genre_edge.bench.report import write_results

    write_results(a.out, a.name or f"scale-{res['bundle']}-{profile}", res, markdown(res), chart)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
