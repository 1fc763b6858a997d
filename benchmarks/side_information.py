"""Does the language model's item similarity add to CF that already has the items' genres?

    python benchmarks/side_information.py --config ml-100k-quick --out benchmarks/results

The hybrid's CF part is collective EASE with the pretrained encoder's item-text similarity in its Gram matrix
(``cf.side_information = "encoder"``); the strongest tuned baseline, ``ease-categories``, is the same EASE with
the items' category overlap there instead. This benchmark gives CF both, ``X'X + a * S_categories + b *
S_encoder`` (cosines over all items, as ``ease-categories`` takes its categories), with the recency weighting
both already read, and tunes every axis on validation nDCG@10 over the grids the project states (lambda:
``EASE_LAMBDAS``; a and b: ``SIDE_WEIGHTS``; half-life x floor: no recency + ``RECENCY_GRID``). Two arms are
chosen from the one grid: the encoder's similarity alone (a = 0: the hybrid's CF part without training) and
both (every point). Test is scored once per arm with its choice and compared per user with ``ease-categories``
as ``genre eval baselines`` tunes it (paired bootstrap CI, sign-flip permutation p, Holm over the two arms).
No training: numpy only, plus one pass of the pretrained encoder over the catalog (8 min on ml-100k here).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402

ARMS = {"encoder similarity alone (a = 0; the hybrid's CF part is this, over rated items only)": lambda a, b: a == 0.0,
        "categories + encoder similarity": lambda a, b: True}


def main(argv: list[str] | None = None) -> int:
    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge_export.ab import holm, paired_stats
    from genre_edge_export.baselines import (EASE_LAMBDAS, RECENCY_GRID, SIDE_WEIGHTS, ease_weights, history_rows,
                                             interaction_matrix, recency_weights, scores_for, side_similarity, tune)
    from genre_edge_export.evaluate import category_features, evaluate
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.train_config import load_config, packaged_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="ml-100k-quick", help="config whose data, split and encoder are used")
    ap.add_argument("--dir", dest="data_dir", default=None, help="data cache folder")
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cpath = Path(a.config) if Path(a.config).is_file() else packaged_config(a.config)
    prep = Prepared(load_config(cpath), a.data_dir)
    sp = prep.split
    X = interaction_matrix(sp)
    F = category_features(prep.data.items.categories)
    base, base_params, base_rows = tune("ease-categories", sp, X, item_features=F)
    S_cat, S_enc = side_similarity(F), side_similarity(prep.pretrained_embeddings())
    hist = {w: sp.histories(w) for w in ("valid", "test")}

    def per_user(fn, which):
        out = {"ndcg@10": []}
        evaluate(fn, sp, which, n_neg=1, per_user_out=out, ranking_only=True)
        return np.asarray(out["ndcg@10"])

    # every grid point's best recency on validation; the arms pick from these rows (ties: the earlier point,
    # i.e. the smaller lambda, side weights and the shorter half-life, as the grids are ordered)
    rows = []
    for lam in EASE_LAMBDAS:
        for wa in SIDE_WEIGHTS:
            for wb in SIDE_WEIGHTS:
                B = ease_weights(X, lam, wa * S_cat + wb * S_enc, 1.0)
                best = None
                for hl, fl in ((0.0, 1.0),) + RECENCY_GRID:
                    rw = recency_weights(hl, fl) if hl > 0 else None
                    nd = evaluate(lambda us, rw=rw, B=B: history_rows(us, hist["valid"], len(B), rw) @ B, sp, "valid",
                                  n_neg=1, ranking_only=True)["ndcg@10"]
                    if best is None or nd > best["valid_ndcg@10"]:
                        best = {"lambda": lam, "categories_weight": wa, "encoder_weight": wb, "half_life": hl,
                                "floor": fl, "valid_ndcg@10": nd}
                rows.append(best)
        print(f"lambda {lam:g} done ({time.perf_counter() - t0:.0f} s)", flush=True)

    base_test = per_user(scores_for(base, hist["test"], sp.request_times("test")), "test")
    base_valid = per_user(scores_for(base, hist["valid"], sp.request_times("valid")), "valid")
    arms, stats = [], {}
    for arm, member in ARMS.items():
        c = max((r for r in rows if member(r["categories_weight"], r["encoder_weight"])),
                key=lambda r: r["valid_ndcg@10"])
        B = ease_weights(X, c["lambda"], c["categories_weight"] * S_cat + c["encoder_weight"] * S_enc, 1.0)
        rw = recency_weights(c["half_life"], c["floor"]) if c["half_life"] > 0 else None
        test = per_user(lambda us: history_rows(us, hist["test"], len(B), rw) @ B, "test")
        stats[arm] = paired_stats(base_test, test)
        arms.append({"arm": arm, "chosen": c, "test_ndcg@10": float(test.mean())})
    for arm, p in holm({k: s["p_permutation"] for k, s in stats.items()}).items():
        stats[arm]["p_holm"] = p
    table = [{"CF (EASE + recency) with": "categories (`ease-categories`, the strongest tuned baseline)",
              "chosen on validation": ", ".join(f"{k} {v:g}" for k, v in base_params.items()),
              "valid nDCG@10": float(base_valid.mean()), "test nDCG@10": float(base_test.mean()),
              "vs ease-categories, 95% CI": "", "p (Holm)": "", "wins/losses/ties": ""}]
    for r in arms:
        c, s = r["chosen"], stats[r["arm"]]
        table.append({"CF (EASE + recency) with": r["arm"],
                      "chosen on validation": f"lam {c['lambda']:g}, categories {c['categories_weight']:g}, encoder "
                                              f"{c['encoder_weight']:g}, half_life {c['half_life']:g}, floor {c['floor']:g}",
                      "valid nDCG@10": c["valid_ndcg@10"], "test nDCG@10": r["test_ndcg@10"],
                      "vs ease-categories, 95% CI": f"{100 * s['rel_diff']:+.1f}% [{s['ci95'][0]:+.4f}, {s['ci95'][1]:+.4f}]",
                      "p (Holm)": s["p_holm"], "wins/losses/ties": f"{s['wins_b']}/{s['losses_b']}/{s['ties']}"})
    res = {"machine": machine(), "config": str(cpath), "baseline": {"name": "ease-categories", "params": base_params,
           "grid": base_rows}, "grid": rows, "arms": arms, "paired_vs_baseline": stats, "table": table,
           "seconds": time.perf_counter() - t0,
           "command": "python benchmarks/side_information.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = [f"# The language model's item similarity as CF side information, with and without genres ({cpath.stem})", "",
          f"Reproduce: `{res['command']}` ({res['seconds'] / 60:.0f} min here).", "",
          "EASE + recency with `a` x the items' category cosine and `b` x the pretrained encoder's item-text cosine added "
          "to its Gram matrix; lambda, a, b, half-life and floor chosen on validation nDCG@10 "
          f"(lambda {list(EASE_LAMBDAS)}, a and b {list(SIDE_WEIGHTS)}, no recency + {len(RECENCY_GRID)} half-life x "
          "floor pairs); test scored once per row with its choice. Paired over the "
          f"{stats[arms[0]['arm']]['users']} warm test users against `ease-categories` as `genre eval baselines` tunes "
          "it; p: sign-flip permutation, Holm over the two arms.", "",
          markdown_table(table, list(table[0])), "",
          machine_markdown(res["machine"]), ""]
    write_results(a.out, a.name or f"side-information-{cpath.stem}", res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
