"""The teacher comparison table: reference baselines, zero-shot encoder, trained teachers and the
exported bundles, on the same split and metrics.

    python benchmarks/teacher_table.py --baselines benchmarks/results/baselines-ml-100k.json \\
        --teacher "hybrid (ml-100k)=runs/full/teacher" --teacher "content-only (ml-100k-content)=runs/content" \\
        --bundle "ml-100k=runs/full/bundle" --out benchmarks/results/teacher-ml-100k

Inputs are the files the pipeline writes (`genre eval baselines` JSON, each teacher's report.json,
each bundle's manifest.json); nothing is re-computed, so the table is exactly what those runs measured.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402


def _named(spec: str, what: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--{what} expects NAME=PATH, got {spec!r}")
    return name, Path(path)


def _json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{what}: cannot read {path} ({exc})") from None


def main(argv: list[str] | None = None) -> int:
    from genre_edge.bench.report import markdown_table, write_report
    from genre_edge_export.reports import comparison_markdown

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baselines", required=True, help="JSON written by 'genre eval baselines'")
    ap.add_argument("--teacher", action="append", default=[], help="NAME=DIR of a trained teacher (repeatable)")
    ap.add_argument("--bundle", action="append", default=[], help="NAME=DIR of an exported bundle (repeatable)")
    ap.add_argument("--out", required=True, help="output stem, e.g. benchmarks/results/teacher-ml-100k")
    a = ap.parse_args(argv)
    base = _json(Path(a.baselines), "--baselines")
    rows = [{"model": r["model"], "warm": r["warm"], "cold": r["cold"]} for r in base["results"]]
    teachers, split = [], base["split"]
    for i, spec in enumerate(a.teacher):
        name, d = _named(spec, "teacher")
        rep = _json(d / "report.json", f"--teacher {name}")
        if rep["split"] != split:
            raise SystemExit(f"--teacher {name}: trained on a different split than the baselines "
                             f"({rep['split']} vs {split}); re-run 'genre eval baselines'")
        if i == 0:  # the zero-shot row is the same encoder for every teacher of one config family
            rows.append({"model": "zero-shot MiniLM (mean of history, no training)", "warm": rep["zero_shot"]["test"],
                         "cold": rep["zero_shot"]["cold"]})
        rows.append({"model": name, "warm": rep["teacher"]["test"], "cold": rep["teacher"]["cold"]})
        teachers.append({"name": name, "dir": str(d), "train_seconds": rep["train_seconds"],
                         "best_epoch": rep["best_epoch"], "threads": rep.get("threads"),
                         "interpolation": rep.get("interpolation"), "calibration": rep.get("calibration"),
                         "cold_valid": rep["teacher"].get("cold_valid", {}), "history": rep["history"]})
    extra = ["Teachers (wall time of `genre train` on this machine, 2 cores):\n"]
    for t in teachers:
        it = t["interpolation"]
        extra.append(f"- **{t['name']}**: {t['train_seconds'] / 60:.1f} min, best epoch {t['best_epoch']}"
                     + (f", WiSE-FT mix alpha {it['alpha']} (chosen on warm valid + cold-valid nDCG@10)" if it else ""))
    md = comparison_markdown("ml-100k: LLM recommender vs reference baselines", rows, split, "\n".join(extra) + "\n")
    bundles = []
    for spec in a.bundle:
        name, d = _named(spec, "bundle")
        m = _json(d / "manifest.json", f"--bundle {name}")
        size = sum(f["bytes"] for f in m["files"].values()) + (d / "manifest.json").stat().st_size
        q = m["quality"]
        bundles.append({"name": name, "bytes": size, "quality": q})
        md += (f"\n## Compression: {name} (validation split; latency = one query, batch 1, 1 thread)\n\n"
               + markdown_table([{"model": k, **v} for k, v in q["rows"].items()],
                                ["model", "ndcg@10", "ndcg_kept", "recall@20", "auc_sampled", "cos_mean", "cos_min",
                                 "latency_ms", "speedup"])
               + f"\nBundle: {size / 1e6:.2f} MB ({size} bytes); quality gate: {q['gate']}\n")
    mach = machine()
    md += "\n" + machine_markdown(mach) + "\n"
    payload = {"split": split, "rows": rows, "teachers": teachers, "bundles": bundles, "machine": mach}
    out = Path(a.out)
    j, mpath = write_report(out.parent, out.name, payload, md)
    print(md)
    print(f"written: {j} and {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
