"""Hard negatives from the CF part (``train.cf_negatives``): a grid chosen on validation, then compared once.

    python benchmarks/hard_negatives.py --work runs/hard-negatives \\
        --quick runs/headline/s0,runs/headline/s1,runs/headline/s2

Each grid point (negatives per positive x the pool of each user's best CF items they are drawn from) is the
quick preset (``ml-100k-quick``) with those two keys, trained with 3 seeds (``genre train --seed``; folders
that already hold a report are reused, so an interrupted run continues). The point with the best mean
validation nDCG@10 is the choice; every point's test numbers are shown for the record. The choice is then
compared per user on test with the tuned ``ease-recency`` baseline and with the quick preset itself
(``--quick``: its seeds' folders, trained here when not given), warm and cold (``genre ab``: paired
bootstrap CI, sign-flip p, Holm over the metrics). About 2 minutes per training here (2 cores).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402
from teacher_args import trained  # noqa: E402

# (negatives per positive, pool of best CF items per user)
GRID = ((32, 20), (64, 10), (64, 20), (64, 50), (128, 20), (128, 50))
BASE = "ml-100k-quick"


def variant_config(work: Path, n: int, pool: int) -> Path:
    """The quick preset's TOML with the two keys appended to its last section, ``[train]``."""
    from genre_edge_export.train_config import load_config, packaged_config

    text = packaged_config(BASE).read_text()
    sections = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("[")]
    if sections[-1] != "[train]":
        raise SystemExit(f"{BASE}.toml no longer ends with [train] (it ends with {sections[-1]}): append elsewhere")
    text = text.replace(f'name = "{BASE}"', f'name = "{BASE}-hard-{n}-{pool}"', 1)
    path = work / f"{BASE}-hard-{n}-{pool}.toml"
    path.write_text(text.rstrip("\n") + f"\ncf_negatives = {n}\ncf_negative_pool = {pool}\n")
    load_config(path)  # validated before any training starts
    return path


def summary(reps: list[dict]) -> dict:
    def ms(w):
        x = np.array([r["teacher"][w]["ndcg@10"] for r in reps])
        return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return {w: ms(w) for w in ("valid", "cold_valid", "test", "cold")}


def main(argv: list[str] | None = None) -> int:
    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge_export.ab import markdown as ab_markdown
    from genre_edge_export.ab import replay
    from genre_edge_export.train_config import packaged_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/hard-negatives", help="folder of the grid's configs and models")
    ap.add_argument("--quick", default="", help="comma-separated folders of the quick preset's seeds (trained "
                    "into WORK/quick when not given)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--name", default="hard-negatives-ml-100k")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    if a.seeds < 1:
        ap.error("--seeds must be >= 1")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    seeds = range(a.seeds)
    quick = ([Path(q.strip()) for q in a.quick.split(",") if q.strip()] if a.quick
             else [work / "quick" / f"s{s}" for s in seeds])
    quick_reps = [trained(packaged_config(BASE), q, s) for s, q in zip(seeds, quick)]
    rows, folders = [], {}
    for n, pool in GRID:
        cfg = variant_config(work, n, pool)
        folders[(n, pool)] = [work / f"{n}-{pool}" / f"s{s}" for s in seeds]
        reps = [trained(cfg, f, s) for s, f in zip(seeds, folders[(n, pool)])]
        rows.append({"negatives": n, "pool": pool, **summary(reps)})
    best = max(rows, key=lambda r: r["valid"][0])
    q = summary(quick_reps)

    def cell(v):
        return f"{v[0]:.4f} +- {v[1]:.4f}"
    table = [{"cf_negatives": "0 (the quick preset)", "cf_negative_pool": "-", **{k: cell(q[k]) for k in q}, "chosen": ""}]
    table += [{"cf_negatives": r["negatives"], "cf_negative_pool": r["pool"], **{k: cell(r[k]) for k in q},
               "chosen": "yes (best valid)" if r is best else ""} for r in rows]

    chosen = ",".join(str(f) for f in folders[(best["negatives"], best["pool"])])
    quick_arm = ",".join(str(f) for f in quick)
    arms: dict = {}
    comparisons = {"vs ease-recency (test)": replay("baseline:ease-recency", chosen, BASE, arms=arms),
                   "vs the quick preset (test)": replay(quick_arm, chosen, BASE, arms=arms),
                   "vs the quick preset (cold test)": replay(quick_arm, chosen, BASE, which="cold")}
    res = {"machine": machine(), "base": BASE, "grid": rows, "quick": {"folders": [str(f) for f in quick], **q},
           "chosen": {"cf_negatives": best["negatives"], "cf_negative_pool": best["pool"], "folders": chosen},
           "comparisons": comparisons,
           "command": "python benchmarks/hard_negatives.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = [f"# Hard negatives from the CF part ({BASE}, {a.seeds} training seeds per row)", "",
          f"Reproduce: `{res['command']}`", "",
          "nDCG@10, mean +- sd over the seeds. The choice is the best mean validation nDCG@10; test and cold "
          "test are shown for every row, for the record, and compared below for the choice only.", "",
          markdown_table(table, ["cf_negatives", "cf_negative_pool", "valid", "cold_valid", "test", "cold", "chosen"],
                         ["negatives per positive", "pool (best CF items per user)", "valid", "cold-valid", "test",
                          "cold test", "chosen"]), ""]
    for title, r in comparisons.items():
        md += [f"## The choice {title}", "", ab_markdown(r).split("\n", 1)[1].strip(), ""]
    md += [machine_markdown(res["machine"]), ""]
    write_results(a.out, a.name, res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
