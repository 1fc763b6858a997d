"""Loading a large interaction log: the row-by-row reader vs the columnar (pyarrow) one, time and peak RSS,
each in a fresh process, on a synthetic log (no public log this size is reachable here).

    python benchmarks/load_bench.py --events 5000000 --users 1000000 --items 100000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
from genre_edge_export.data.loaders import load_generic
t0 = time.perf_counter()
ds = load_generic(sys.argv[1], columnar=sys.argv[2] == "columnar")
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(ds.interactions), "users": len(ds.users),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_log(root: Path, events: int, users: int, items: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with open(root / "items.csv", "w") as f:
        f.write("item_id,title\n")
        f.writelines(f"i{k},Item {k}\n" for k in range(items))
    pop = 1.0 / np.arange(1, items + 1) ** 0.8  # a long tail, as real catalogs have
    with open(root / "log.csv", "w") as f:
        f.write("user_id,item_id,timestamp,rating\n")
        for a in range(0, events, 1_000_000):
            n = min(1_000_000, events - a)
            u = rng.integers(0, users, n)
            i = rng.choice(items, n, p=pop / pop.sum())
            t = 1_600_000_000 + rng.integers(0, 10**8, n)
            r = rng.integers(1, 6, n)
            f.write("".join(f"u{x},i{y},{z},{w}\n" for x, y, z, w in zip(u, i, t, r)))
    (root / "c.toml").write_text('[interactions]\npath = "log.csv"\nrating = "rating"\n[items]\npath = "items.csv"\n')
    return root / "c.toml"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--name", default="load-log")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    from genre_edge.bench.machine import machine, machine_markdown
    from genre_edge.bench.report import write_results

    with tempfile.TemporaryDirectory(prefix="genre-load-") as tmp:
        conf = write_log(Path(tmp), a.events, a.users, a.items)
        size = (Path(tmp) / "log.csv").stat().st_size
        rows = []
        for mode in ("columnar", "rows"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(conf), mode], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            rows.append({"reader": mode, **json.loads(out.stdout.strip().splitlines()[-1])})
    res = {"machine": machine(), "events": a.events, "users": a.users, "items": a.items, "csv_bytes": size,
           "rows": rows, "command": "python benchmarks/load_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    L = [f"# Loading an interaction log: {a.events:,} events, {a.users:,} users, {a.items:,} items "
         f"({size / 1e6:.0f} MB CSV)", "", machine_markdown(res["machine"]), "", f"Command: `{res['command']}`", "",
         "| reader | seconds | peak RSS (MiB) | rows kept | users |", "|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['reader']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | {r['rows']:,} | {r['users']:,} |")
    L += ["", "Each reader in a fresh process; both give the same dataset (tests/test_loaders.py). The columnar "
          "reader is pyarrow's multi-threaded CSV reader with vectorised id lookups (the default when pyarrow is "
          "installed); the row reader builds a Python tuple per event.", ""]
    write_results(a.out, a.name, res, "\n".join(L))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
