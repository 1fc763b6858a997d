"""CF neighbour tables at catalog scale: widened in memory vs memory-mapped as stored, RSS and request cost.

    python benchmarks/cf_tables.py --items 1000000 --neighbors 200

A synthetic table as a bundle stores it (int32 ids for catalogs past 32,767 items, float16 weights) is read
the way ``Bundle.load_cf`` does, in a fresh process per way: ``widened`` (int32/float32 arrays in memory, the
default for small catalogs) and ``mapped`` (memory-mapped as stored, what lean catalogs get). Per request
(50-item history, recency-weighted): the whole-catalog CF vector (``CFScorer.scores``, the exact path) and the
sparse one (``CFScorer.sparse``, the ann path).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402

CHILD = """
import json, sys, time
import numpy as np
from genre_edge.scorer import CFScorer
from genre_edge.bench.timing import time_calls
def rss(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
folder, how = sys.argv[1], sys.argv[2]
r0, a0 = rss(), rss("RssAnon")
t = time.perf_counter()
mapped = how == "mapped"
idx = np.load(folder + "/idx.npy", mmap_mode="r" if mapped else None)
w = np.load(folder + "/w.npy", mmap_mode="r" if mapped else None)
for a in range(0, len(idx), 65536):  # the load's checks, in blocks
    b = idx[a:a + 65536]; assert b.min() >= 0 and b.max() < len(idx); assert np.isfinite(w[a:a + 65536]).all()
if not mapped:
    idx, w = idx.astype(np.int32), w.astype(np.float32)
else:  # as Bundle.load_cf does after its checks
    from genre_edge.catalog_rows import release_pages
    release_pages(idx); release_pages(w)
cf = CFScorer("ease", idx=idx, w=w, half_life=10.0, floor=0.1)
load_s = time.perf_counter() - t
r_load = rss() - r0
rng = np.random.default_rng(0)
hists = [rng.choice(len(idx), 50, replace=False) for _ in range(50)]
i = iter(range(10**9))
dense = time_calls(lambda: cf.scores(hists[next(i) % 50], len(idx)), 100, 10)
sparse = time_calls(lambda: cf.sparse(hists[next(i) % 50]), 100, 10)
print("RESULT " + json.dumps({"how": how, "load_s": load_s, "rss_after_load_mib": r_load,
                              "dense_ms": dense, "sparse_ms": sparse, "rss_serving_mib": rss() - r0,
                              "anon_serving_mib": rss("RssAnon") - a0, "file_serving_mib": rss("RssFile")}))
"""


def main(argv=None) -> int:
    from genre_edge.bench.report import write_results

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--neighbors", type=int, default=200)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="genre-cf-") as tmp:
        rng = np.random.default_rng(0)
        idx = np.lib.format.open_memmap(f"{tmp}/idx.npy", "w+", np.int32, (a.items, a.neighbors))
        w = np.lib.format.open_memmap(f"{tmp}/w.npy", "w+", np.float16, (a.items, a.neighbors))
        for s in range(0, a.items, 100_000):
            e = min(a.items, s + 100_000)
            idx[s:e] = rng.integers(0, a.items, (e - s, a.neighbors))
            w[s:e] = rng.standard_normal((e - s, a.neighbors)).astype(np.float16) * 0.01
        idx.flush(), w.flush()
        del idx, w
        size = sum(os.path.getsize(f"{tmp}/{f}") for f in ("idx.npy", "w.npy"))
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        for how in ("widened", "mapped"):
            subprocess.run(["sync"], check=False)
            p = subprocess.run([sys.executable, "-c", CHILD, tmp, how], capture_output=True, text=True, env=env)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            if p.returncode or line is None:
                raise SystemExit(p.stderr[-3000:])
            rows.append(json.loads(line[7:]))
    res = {"machine": machine(), "items": a.items, "neighbors": a.neighbors, "bytes_on_disk": size, "rows": rows,
           "command": "python benchmarks/cf_tables.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    L = [f"# CF neighbour tables: {a.items:,} items x {a.neighbors} neighbours ({size / 2**20:,.0f} MiB on disk)", "",
         machine_markdown(res["machine"]), "", f"Command: `{res['command']}`", "",
         "| tables | load s | RSS after load MiB | RSS after 220 requests MiB | of which anonymous MiB | "
         "whole-catalog CF p50 ms | sparse CF p50 ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['how']} | {r['load_s']:.2f} | {r['rss_after_load_mib']:,.0f} | {r['rss_serving_mib']:,.0f} | "
                 f"{r['anon_serving_mib']:,.0f} | "
                 f"{r['dense_ms']['p50']:.2f} | {r['sparse_ms']['p50']:.2f} |")
    L += ["", "RSS: the process's growth over the interpreter's own. A mapped table's pages count in RSS once a "
          "request gathered them, with the kernel's fault-around (up to 64 KiB per fault) - file-backed pages the OS "
          "can drop under memory pressure, unlike the anonymous memory of widened tables; the load's range checks "
          "read every page once, then let them go (madvise DONTNEED), as `Bundle.load_cf` does.", ""]
    write_results(a.out, a.name or f"cf-tables-{a.items // 1_000_000}m", res, "\n".join(L))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
