"""Requests that name an item as an example ("movies like Star Wars"): what each way of serving them returns.

    python benchmarks/like_requests.py --bundle runs/quickstart/bundle --out benchmarks/results

For the ``--items`` most popular catalog items X whose title the request parser finds, the request
"movies like <title of X>" is served three ways, without a history and after a history (the last 20 liked
items of a seeded random user of the data set, the same user for every way):

* ``text``: the sentence embedded as it is (``parse_query=False``: what a request was before the parser
  knew titles);
* ``history``: X appended to the history and no query (what the first version of named items did);
* ``named``: the sentence parsed (the runtime today): X's embedding is the query direction, X joins the
  history, X is left out of the answer.

Per way, over the top-10: how often X itself is returned, the share of items sharing a category with X,
the mean Jaccard overlap of their categories with X's, the mean co-like rate in the data set's log (of
the users who liked X, the share who also liked the item: behaviour, independent of the encoder; the
bundle's CF part read the training part of the same log) and its lift over the item's base rate (the
share of all users who liked it: a blockbuster is co-liked with anything). Medians of request latency too.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402

WAYS = ("text", "history", "named")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--data", default="ml-100k", help="the data set the bundle was trained on (name or path)")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="like-requests-ml-100k")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge.recommender import Recommender
    from genre_edge_export.data import load_dataset
    from genre_edge_export.data.fetch import DATASETS

    path = DATASETS[args.data](None).path if args.data in DATASETS else Path(args.data)
    ds = load_dataset(path)
    rec = Recommender.load(args.bundle, "auto", state_dir=Path(str(Path(args.bundle).resolve()) + ".bench-state"))
    cat = rec.catalog
    inter = ds.interactions
    pos = inter.label == 1
    liked: dict[str, set[int]] = {}
    for u, i in zip(inter.user[pos].tolist(), inter.item[pos].tolist()):
        liked.setdefault(ds.items.ids[i], set()).add(u)
    rng = np.random.default_rng(args.seed)
    users = np.unique(inter.user[pos])
    order = np.argsort(-cat.pop[: cat.n_bundle], kind="stable")
    picked = []
    for r in order:
        x, title = cat.ids[r], cat.titles[r]
        got = rec.recommend([], query=f"movies like {title}", k=1, explain=False).parsed
        if got["like"] == [x]:  # the parser finds this title (and no other one)
            picked.append((x, title))
        if len(picked) == args.items:
            break
    n_users = len(np.unique(inter.user))
    per = {(ctx, w): {"self": [], "share_cat": [], "jaccard": [], "colike": [], "lift": [], "ms": []}
           for ctx in ("no history", "20-item history") for w in WAYS}
    for x, title in picked:
        u = int(rng.choice(users))
        mine = inter.item[pos & (inter.user == u)]
        hist20 = [ds.items.ids[i] for i in mine[-20:] if ds.items.ids[i] != x]
        cx = set(cat.categories[cat.index[x]])
        fans = liked.get(x, set())
        q = f"movies like {title}"
        for ctx, hist in (("no history", []), ("20-item history", hist20)):
            for w in WAYS:
                t = time.perf_counter()
                if w == "text":
                    r = rec.recommend(hist, query=q, parse_query=False, k=10, explain=False)
                elif w == "history":
                    r = rec.recommend(hist + [x], k=10, explain=False)
                else:
                    r = rec.recommend(hist, query=q, k=10, explain=False)
                ms = (time.perf_counter() - t) * 1e3
                m = per[(ctx, w)]
                ids = [it.id for it in r.items]
                m["self"].append(x in ids)
                others = [it for it in r.items if it.id != x]
                m["share_cat"].append(np.mean([bool(cx & set(it.categories)) for it in others]) if others else 0.0)
                m["jaccard"].append(np.mean([len(cx & set(it.categories)) / max(len(cx | set(it.categories)), 1)
                                             for it in others]) if others else 0.0)
                m["colike"].append(np.mean([len(fans & liked.get(it.id, set())) / max(len(fans), 1) for it in others])
                                   if others else 0.0)
                # lift: the co-like rate over the item's base rate (a popular item is co-liked with anything)
                m["lift"].append(np.mean([len(fans & liked.get(it.id, set())) / max(len(fans), 1)
                                          / max(len(liked.get(it.id, ())) / n_users, 1e-9) for it in others])
                                 if others else 0.0)
                m["ms"].append(ms)
    rows = []
    for (ctx, w), m in per.items():
        rows.append({"context": ctx, "way": w, "items": len(m["self"]), "X returned": float(np.mean(m["self"])),
                     "share of top-10 sharing a category with X": float(np.mean(m["share_cat"])),
                     "category Jaccard with X": float(np.mean(m["jaccard"])),
                     "co-like rate with X": float(np.mean(m["colike"])), "lift over the item's base rate":
                     float(np.mean(m["lift"])), "p50 ms": float(np.median(m["ms"]))})
    cols = ["context", "way", "items", "X returned", "share of top-10 sharing a category with X",
            "category Jaccard with X", "co-like rate with X", "lift over the item's base rate", "p50 ms"]
    md = (f"# Requests naming an item: \"movies like X\" ({rec.variant}, {len(picked)} items)\n\n"
          + __doc__.split("\n\n", 2)[2] + "\n" + markdown_table(rows, cols) + "\n" + machine_markdown(machine()))
    write_results(args.out, args.name, {"rows": rows, "items": [x for x, _ in picked], "machine": machine(),
                                        "bundle": str(args.bundle), "variant": rec.variant}, md)
    print(markdown_table(rows, cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
