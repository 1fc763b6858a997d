"""The catalog index at 8 bits against 4 bits, on one CPU: scan and refine time, accuracy, memory.

    python benchmarks/index_bits.py --bundle runs/quickstart/bundle [--items 100000]

Why: the int8 scan reads the whole catalog per request and is bound by memory bandwidth (100k x 384 bytes); on a
CPU without VNNI it is also where a request spends most of its time. ONNX Runtime's ``MatMulNBits`` (com.microsoft;
4-bit weights in blocks along the embedding, one float scale per block, int8 compute: ``accuracy_level = 4``) reads
half the bytes, and its 4-bit x 8-bit products cannot saturate AVX2's int16 pair sums. What it costs is accuracy:
more rows must be re-scored exactly (``refine``) for the top-200 to match float32.

Rows: the 8-bit index (``CatalogScorer("int8")``: 8-bit rows, the query at 8 bits (7 on AVX2 without VNNI),
its best 256 rows re-scored exactly) and the 4-bit index (the runtime's ``Int4Index``) per block size and
refined-row count; the report says which of the two ``catalog_scoring = "auto"`` builds on this CPU (4 bits in
blocks of 32 with 512 refined rows on x86 without VNNI, for 256+ dims; 8 bits elsewhere). Every row is timed
on the same catalog (the bundle's items plus noisy copies, as ``scale_curve.py`` grows it) with user vectors of
``--users`` random 50-item histories, one thread; accuracy is the top-200 overlap with float32 scores, mean and
minimum over those users. Writes ``index-bits-<profile>.{json,md}``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scale_curve import grow  # noqa: E402

from genre_edge.bench.machine import machine, machine_markdown  # noqa: E402

log = logging.getLogger("index_bits")
BLOCKS = (32, 64)
REFINES = (256, 512, 1024)


def overlap(s: np.ndarray, ref: np.ndarray, k: int = 200) -> float:
    return len(set(np.argpartition(-s, k)[:k]) & set(np.argpartition(-ref, k)[:k])) / k


def run(bundle: str, items: int, users: int, reps: int) -> dict:
    from genre_edge.bench.timing import time_calls
    from genre_edge.catalog_index import CatalogScorer, Int4Index, index_bits, index_bytes_per_row, top_n
    from genre_edge.recommender import Recommender

    rec = Recommender.load(bundle, "auto")
    grow(rec, items)
    cat = rec.catalog
    emb = np.asarray(cat.emb, np.float32)
    rng = np.random.default_rng(1)
    real = cat.ids[: cat.n_bundle]
    us = []
    for _ in range(users):
        hist = np.array([cat.index[i] for i in rng.choice(real, min(50, len(real)), replace=False)], np.int64)
        us.append(np.asarray(rec.user_model(cat.emb[hist])[0], np.float32))
    refs = [emb @ u for u in us]
    rows = []

    def row(name, bits, block, refine, score, nbytes, scan=None):
        ov = [overlap(score(u), r) for u, r in zip(us, refs)]
        rows.append({"index": name, "bits": bits, "block": block, "refine": refine, "bytes": int(nbytes),
                     "scan_ms": time_calls(lambda: scan(us[0]), reps) if scan else None,
                     "total_ms": time_calls(lambda: score(us[0]), reps),
                     "overlap_mean": float(np.mean(ov)), "overlap_min": float(np.min(ov))})
        log.info("%s: %s", name, rows[-1])

    cs = CatalogScorer("int8", 1)
    cs.build(cat)
    row("int8", 8, None, cs.refine_top, lambda u: cs.scores(cat, u), emb.shape[0] * (emb.shape[1] + 4),
        lambda u: cs.index.scores(u))
    for block in [b for b in BLOCKS if emb.shape[1] % b == 0]:  # blocks tile the embedding (a tiny model's 32 dims: 32)
        ix = Int4Index(emb, 1, block=block)
        nbytes = emb.shape[0] * index_bytes_per_row(4, emb.shape[1], block)
        scan = ix.scores
        for refine in REFINES:
            def score(u, scan=scan, refine=refine):
                s = scan(u).copy()
                best = top_n(s, None, refine)
                s[best] = emb[best] @ u
                return s
            row(f"int4, block {block}", 4, block, refine, score, nbytes, scan)
    return {"items": len(emb), "dim": int(emb.shape[1]), "users": users, "profile": rec.profile.name,
            "reduce_range": bool(cs.index.reduce_range), "auto_bits": index_bits("auto", int(emb.shape[1])),
            "rows": rows}


def markdown(res: dict) -> str:
    auto = res.get("auto_bits")
    L = ["# Catalog index: 8-bit vs 4-bit rows", "", machine_markdown(res["machine"]), "",
         f"Command: `{res['command']}`.", "", *([res["note"], ""] if res.get("note") else []),
         f"{res['items']:,} items x {res['dim']} dims (the bundle's items and noisy copies of them), profile "
         f"`{res['profile']}` (8-bit index query at {'7' if res['reduce_range'] else '8'} bits), one thread; overlap: "
         f"top-200 vs float32 scores over {res['users']} users' 50-item histories; ms: p50 for one user vector.", "",
         *([f"`catalog_scoring = \"auto\"` builds the {'4-bit index (blocks of 32, 512 refined rows)' if auto == 4 else '8-bit index'} "
            "on this CPU at these dims.", ""] if auto else []),
         "| index | refined rows | index MB | scan p50 ms | scan + refine p50 ms | top-200 overlap mean | min |",
         "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        scan = f"{r['scan_ms']['p50']:.3f}" if r["scan_ms"] else "-"
        L.append(f"| {r['index']} | {r['refine']} | {r['bytes'] / 1e6:.1f} | {scan} | {r['total_ms']['p50']:.3f} | "
                 f"{r['overlap_mean']:.4f} | {r['overlap_min']:.3f} |")
    return "\n".join(L + [""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--name", default=None)
    ap.add_argument("--note", default=None, help="a line for the report (e.g. how the run was emulated)")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (Path(a.bundle) / "manifest.json").is_file():
        ap.error(f"--bundle {a.bundle}: no manifest.json there")
    if a.items < 2000 or a.users < 1 or a.reps < 5:
        ap.error("--items must be >= 2000, --users >= 1 and --reps >= 5")
    res = run(a.bundle, a.items, a.users, a.reps)
    res.update(machine=machine(), note=a.note, command="python benchmarks/index_bits.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    from genre_edge.bench.report import write_results

    write_results(a.out, a.name or f"index-bits-{res['profile']}", res, markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
