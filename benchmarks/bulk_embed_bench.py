"""Bulk catalog embedding, local process vs Ray Data on a local instance: throughput and how far the
vectors of the two engines are apart (same bundle, same items).

    python benchmarks/bulk_embed_bench.py --bundle runs/quickstart/bundle --items 100000 --workers 2

The items are the bundle's own catalog titles, repeated with a numbered suffix up to ``--items``
(synthetic: no public catalog of that size is reachable here). With a dynamic-int8 encoder the
activation scale is computed per batch, so a text's vector depends a little on its batch neighbours:
the report gives the difference between engines and between batch sizes of one engine, side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from genre_edge.bench.machine import machine, machine_markdown  # noqa: E402


def write_items(bundle: Path, n: int, path: Path) -> int:
    cat = json.loads((bundle / "catalog" / "items.json").read_text())
    titles, cats, years = cat["title"], cat["categories"], cat["year"]
    with open(path, "w") as f:
        for i in range(n):
            j = i % len(titles)
            f.write(json.dumps({"id": f"s{i}", "title": f"{titles[j]} {i // len(titles) + 1}", "categories": cats[j],
                                "year": int(years[j])}) + "\n")
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--profile", default="auto")
    ap.add_argument("--no-shuffled", action="store_true", help="skip the local run on shuffled items (saves a run)")
    ap.add_argument("--name", default="bulk-embed")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    from genre_edge_export.bulk_embed import embed_catalog, read_embeddings

    tmp = Path(tempfile.mkdtemp(prefix="genre-bulk-"))
    try:
        write_items(a.bundle, a.items, tmp / "items.jsonl")
        lines = (tmp / "items.jsonl").read_text().splitlines(keepends=True)
        np.random.default_rng(0).shuffle(lines)
        (tmp / "shuffled.jsonl").write_text("".join(lines))
        runs = {}
        plan = [("local", "items", {"engine": "local"}),
                ("local, items shuffled", "shuffled", {"engine": "local"}),
                (f"ray, {a.workers} workers", "items", {"engine": "ray", "workers": a.workers})]
        for name, src, kw in [r for r in plan if not (a.no_shuffled and r[1] == "shuffled")]:
            m = embed_catalog(a.bundle, tmp / f"{src}.jsonl", tmp / name.replace(" ", "_").replace(",", ""),
                              profile=a.profile, batch_size=a.batch_size, **kw)
            _, ids, emb = read_embeddings(tmp / name.replace(" ", "_").replace(",", ""))
            order = np.argsort(np.asarray(ids))
            runs[name] = (m, np.asarray(ids)[order], emb[order])
        ref_ids, ref = runs["local"][1], runs["local"][2]
        rows = []
        for name, (m, ids, emb) in runs.items():
            assert (ids == ref_ids).all()
            cos = (emb * ref).sum(1)
            rows.append({"engine": name, "rows": m["rows"], "seconds": m["seconds"], "texts_per_s": m["texts_per_s"],
                         "variant": m["variant"], "shards": len(m["shards"]),
                         "max_abs_diff_vs_local": float(np.abs(emb - ref).max()), "min_cosine_vs_local": float(cos.min())})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {"machine": machine(), "bundle": str(a.bundle), "items": a.items, "rows": rows,
           "command": "python benchmarks/bulk_embed_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    L = [f"# Bulk catalog embedding: {a.items:,} texts, local vs Ray Data", "", machine_markdown(res["machine"]), "",
         f"Command: `{res['command']}`", "",
         "| engine | texts | seconds | texts/s | shards | max abs diff vs local | min cosine vs local |",
         "|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['engine']} ({r['variant']}) | {r['rows']:,} | {r['seconds']:.1f} | {r['texts_per_s']:,.0f} | "
                 f"{r['shards']} | {r['max_abs_diff_vs_local']:.2e} | {r['min_cosine_vs_local']:.5f} |")
    L += ["", "Dynamic int8 quantizes activations with one scale per batch, so a vector depends a little on its batch "
          "neighbours: the `local, items shuffled` row is the same engine with other batch neighbours, for scale. With the fp32 "
          "variant the engines agree to 1e-5 (tests/test_bulk_embed.py).", ""]
    from genre_edge.bench.report import write_results

    write_results(a.out, a.name, res, "\n".join(L))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
