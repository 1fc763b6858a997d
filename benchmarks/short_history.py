"""Short histories: the trained hybrid against tuned CF when the device knows only a user's last few items.

    python benchmarks/short_history.py --config ml-100k-quick \
        --teachers runs/headline/s0,runs/headline/s1,runs/headline/s2 [--bundle runs/quickstart/bundle]

Why: a device often serves users it has known for a short while (a new owner, a new profile), and that is where
item text should help most: with one or three items CF has little to go on. Each warm test user's history is cut to
their last N positives (``--lengths``; 0 = the whole history) and every arm ranks the same held-out items from it
(the items seen before still leave the ranking, as for whole histories). Each baseline is scored twice: tuned on
validation as usual (whole histories), and tuned on validation histories cut to the same N (``genre ab
--history-last N``: the same care for short histories). The hybrid likewise: as trained and calibrated once on
whole histories (what ships: with the packaged configs' ``cf.short_history = [1, 3]``, its CF tables for
histories of 1 and of 2-3 items included), and with its EASE CF part chosen for N the way training chooses it
(``Prepared.ease_table``: lambda and side-information weight on validation histories cut to N) and the CF part's
weight in the blend rescaled on the same validation (:data:`CF_SCALES`); the content tower and the rest of the
blend stay as trained; and (``--short-table T``, default 0 = not measured) with one CF table chosen that way for
histories cut to T and used for every history of at most T items: what such a table would give teachers trained
without one.
Reported per N: nDCG@10 and Recall@20 of each arm, each hybrid (per-user mean over its
training seeds) minus each baseline with a paired bootstrap CI and sign-flip p, Holm over the lengths; then, on
whole histories, the same comparison within quartiles of the users' own history lengths. About 13 minutes for the
default lengths on ml-100k here, most of it the grids.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402
from teacher_args import add_teacher_args, load_teachers, mean_sd  # noqa: E402

from genre_edge_export.calibrate import SHORT_CF_SCALES  # noqa: E402

METRICS = ("ndcg@10", "recall@20")
# the hybrid given a CF part chosen for short histories: its CF score's weight in the blend times one of these,
# chosen on validation (a larger lambda shrinks EASE's weights, so the trained blend weight no longer fits them);
# the grid training searches for its short-history tables (cf.short_history)
CF_SCALES = SHORT_CF_SCALES


def parse_lengths(text: str) -> list[int]:
    """``"1,3,5,0"`` -> [1, 3, 5, 0] (order kept, duplicates dropped); each >= 0, 0 = whole histories."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            n = int(part)
        except ValueError:
            raise ValueError(f"--lengths: {part!r} is not a whole number (0 = whole histories)") from None
        if n < 0:
            raise ValueError(f"--lengths: {n} is negative; lengths are >= 0 (0 = whole histories)")
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("--lengths: no length given")
    return out


def quartile_buckets(lengths: np.ndarray) -> list[tuple[int, int]]:
    """(low, high] history-length ranges at the quartiles of ``lengths`` (the data set's own, not fixed edges),
    duplicates merged: every user falls in exactly one."""
    edges = np.unique(np.quantile(lengths, [0.25, 0.5, 0.75]).astype(int))
    bounds = [0, *[int(e) for e in edges if 0 < e < lengths.max()], int(lengths.max())]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def cf_chosen_for(M, rec, table, sp, n: int, n_tests=None) -> tuple[float, dict]:
    """(the CF scale chosen on validation, {test length: per-user test metrics}): teacher ``M``'s modules ``rec`` with
    its CF part's neighbour table replaced by ``table`` (chosen for histories cut to ``n``) times each of
    :data:`CF_SCALES`, the scale of best validation nDCG@10 on histories cut to ``n`` scored once on test histories
    cut to each of ``n_tests`` (default ``n`` alone); ``rec`` is left as it was."""
    from genre_edge_export.evaluate import evaluate
    from genre_edge_export.models import CFPart
    from genre_edge_export.scoring import Scorer, popularity_rows

    def scorer(which: str, last: int):
        pop = popularity_rows(rec, sp, sp.request_times(which)) if float(rec.pop_half_life) > 0 else None
        return Scorer(M.conf, rec, M.emb, sp.histories(which, last=last), None, pop)

    old, (idx, w) = rec.cf, table
    best = None
    try:
        for scale in CF_SCALES:
            rec.cf = CFPart("ease", len(M.items["ids"]), (idx, w * scale))
            rec.cf.recency.copy_(old.recency)  # the calibrated recency weighting stays
            v = evaluate(scorer("valid", n), sp, "valid", n_neg=1, ranking_only=True).get("ndcg@10", 0.0)
            if best is None or v > best[0]:
                best = (v, scale, rec.cf)
        rec.cf = best[2]
        out: dict = {}
        for last in ((n,) if n_tests is None else n_tests):
            evaluate(scorer("test", last), sp, "test", per_user_out=out.setdefault(last, {}), ranking_only=True)
    finally:
        rec.cf = old
    return best[1], out


def main(argv: list[str] | None = None) -> int:
    from genre_edge.bench.report import markdown_table, write_report
    from genre_edge_export.ab import Arm, holm, paired_stats
    from genre_edge_export.baselines import BASELINES, grid_edges, interaction_matrix, scores_for, tune
    from genre_edge_export.evaluate import category_features, evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_teacher_args(ap)
    ap.add_argument("--bundle", default=None, help="also this bundle (e.g. the main job's), scored by the runtime")
    ap.add_argument("--lengths", default="1,2,3,5,10,20,0", help="history lengths to cut to (0 = whole histories)")
    ap.add_argument("--baselines", default="ease-categories,ease-recency", help="comma-separated baselines")
    ap.add_argument("--short-table", type=int, default=0,
                    help="also the hybrid with one CF table for every history of at most this many items (chosen, and "
                    "its scale, on validation histories cut to it): what a short-history table "
                    "(training's cf.short_history) would give teachers trained without one; 0 = not measured")
    ap.add_argument("--bootstrap", type=int, default=2000)
    a = ap.parse_args(argv)
    if a.short_table < 0:
        ap.error(f"--short-table must be >= 0 (0 = not measured), not {a.short_table}")
    try:
        lengths = parse_lengths(a.lengths)
    except ValueError as exc:
        ap.error(str(exc))
    bases = [b.strip() for b in a.baselines.split(",") if b.strip()]
    bad = [b for b in bases if b not in BASELINES]
    if bad or not bases:
        ap.error(f"--baselines: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(BASELINES)}")
    if a.bundle and not (Path(a.bundle) / "manifest.json").is_file():
        ap.error(f"--bundle: {a.bundle} is not a bundle folder (no manifest.json)")
    cpath, prep, teachers, models = load_teachers(ap, a)
    if any(M.conf.user_model.profile_weight > 0 for M in models):
        ap.error("--teachers: models trained with users' LLM profile texts are not supported here")
    sp = prep.split
    ids, users = list(prep.data.items.ids), list(prep.data.users)
    when = sp.request_times("test")
    feats = category_features(prep.data.items.categories)
    X = interaction_matrix(sp)
    whole_tuned = {b: tune(b, sp, X, item_features=feats) for b in bases}  # once: they read histories when scoring
    # the hybrid with a CF part chosen for N: only for an EASE CF part (the one training chooses on validation)
    retune = prep.conf.cf.kind == "ease" and all(M.conf.cf.kind == "ease" for M in models)
    modules = [M.modules()[1] for M in models] if retune else []
    tables: dict = {}  # the CF part chosen for each length: one grid per length, shared by the two arms using it

    def table_for(n: int):
        if n not in tables:
            tables[n] = prep.ease_table(n)
        return tables[n]

    short_name = f"hybrid, one CF table for <= {a.short_table} items"
    short_table = table_for(a.short_table) if retune and a.short_table else None
    # its scale is chosen once per seed, then every length up to its own is scored with it
    short_scored = ([cf_chosen_for(M, rec, short_table[0], sp, a.short_table,
                                   [n for n in lengths if 0 < n <= a.short_table])[1]
                     for M, rec in zip(models, modules)] if short_table is not None else [])

    def ev(score) -> dict:
        pu: dict = {}
        evaluate(score, sp, "test", per_user_out=pu, ranking_only=True)
        return pu

    rows, comps, raw, buckets = [], [], {}, []
    for n in lengths:
        hist = sp.histories("test", last=n)
        per = {f"teacher {i}": ev(Arm(t, ids, hist, users, sp, prep, when=when).score) for i, t in enumerate(teachers)}
        hybrids = {"hybrid as trained": [per[f"teacher {i}"] for i in range(len(teachers))]}
        cf_info = None
        if retune and n:
            table, info = table_for(n)
            chosen = [cf_chosen_for(M, rec, table, sp, n) for M, rec in zip(models, modules)]
            hybrids["hybrid, CF part for N"] = [pu[n] for _, pu in chosen]
            cf_info = {"lambda": info["lambda"], "side_weight": info["side_weight"], "at_edge": info["at_edge"],
                       "cf_scales": [s for s, _ in chosen], "scale_at_edge": any(s in (CF_SCALES[0], CF_SCALES[-1])
                                                                                 for s, _ in chosen)}
        elif retune:  # whole histories: the CF part training chose
            hybrids["hybrid, CF part for N"] = hybrids["hybrid as trained"]
        short_used = short_table is not None and 0 < n <= a.short_table
        if short_used:  # the one short-history table, whatever the length up to its own
            hybrids[short_name] = [scored[n] for scored in short_scored]
        elif short_table is not None:  # longer histories keep the CF part training chose
            hybrids[short_name] = hybrids["hybrid as trained"]
        if a.bundle:
            per["bundle"] = ev(Arm(a.bundle, ids, hist, users, sp, prep, when=when).score)
        params, edges = {}, {}
        for b in bases:
            per[f"{b} (tuned on whole)"] = ev(scores_for(whole_tuned[b][0], hist, when))
            if n:
                model, params[b], grid = tune(b, sp, X, item_features=feats, history_last=n)
                per[f"{b} (tuned for N)"] = ev(scores_for(model, hist, when))
            else:
                _, params[b], grid = whole_tuned[b]
                per[f"{b} (tuned for N)"] = per[f"{b} (tuned on whole)"]
            # a choice still on an edge after tune() followed it outward: the baseline may be better still
            edges[b] = grid_edges(grid, params[b])
        label = str(n) if n else "whole"
        hyb = {h: {m: np.mean([pu[m] for pu in runs], 0) for m in METRICS} for h, runs in hybrids.items()}
        row = {"history": label, "users": len(hyb["hybrid as trained"]["ndcg@10"])}
        for h, runs in hybrids.items():
            row[h] = mean_sd([float(np.mean(pu["ndcg@10"])) for pu in runs])
        if cf_info:
            row["hybrid's CF part for N"] = (f"lam {cf_info['lambda']:g}, side_weight {cf_info['side_weight']:g}, CF scale "
                                             + "/".join(f"{s:g}" for s in cf_info["cf_scales"])
                                             + (" (on the grid's edge)" if cf_info["at_edge"] or cf_info["scale_at_edge"]
                                                else ""))
        if a.bundle:
            row["int8 bundle"] = float(np.mean(per["bundle"]["ndcg@10"]))
        for b in bases:
            row[f"{b}, tuned on whole"] = float(np.mean(per[f"{b} (tuned on whole)"]["ndcg@10"]))
            row[f"{b}, tuned for N"] = float(np.mean(per[f"{b} (tuned for N)"]["ndcg@10"]))
            row[f"{b} chosen for N"] = (", ".join(f"{k} {v:g}" for k, v in params[b].items())
                                        + (f" (on the grid's edge: {', '.join(edges[b])})" if edges[b] else ""))
        rows.append(row)
        raw[label] = {"params": params, "at_edge": edges, "hybrid_cf_for_n": cf_info,
                      "means": {k: {m: float(np.mean(v[m])) for m in METRICS} for k, v in per.items()}}
        pairs = [("hybrid as trained", f"{b}, {t}") for b in bases for t in ("tuned on whole", "tuned for N")]
        pairs += [("hybrid, CF part for N", f"{b}, tuned for N") for b in bases if "hybrid, CF part for N" in hyb]
        if short_used:
            pairs += [(short_name, "hybrid as trained")] + [(short_name, f"{b}, tuned for N") for b in bases]
        for h, base in pairs:
            for m in METRICS:
                if base in hyb:  # one hybrid against another
                    ref = hyb[base][m]
                else:
                    b, tuned = base.split(", ")
                    ref = per[f"{b} ({tuned})"][m]
                c = paired_stats(ref, hyb[h][m], n_boot=a.bootstrap)
                comps.append({"history": label, "hybrid": h, "baseline": base, "metric": m,
                              "baseline value": c["mean_a"], "hybrid value": c["mean_b"], "hybrid - baseline": c["diff"],
                              "relative": f"{100 * c['rel_diff']:+.1f}%",
                              "ci95": f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", "p": c["p_permutation"],
                              "_ci": c["ci95"]})
        if n == 0:  # within quartiles of the users' own history lengths (whole histories, baselines as usual)
            own = np.array([len(hist[u]) for u in per["teacher 0"]["users"]])
            for lo, hi in quartile_buckets(own):
                keep = (own > lo) & (own <= hi)
                for b in bases:
                    c = paired_stats(per[f"{b} (tuned on whole)"]["ndcg@10"][keep],
                                     hyb["hybrid as trained"]["ndcg@10"][keep], n_boot=a.bootstrap)
                    buckets.append({"own history": f"{lo + 1}-{hi}", "users": int(keep.sum()), "baseline": b,
                                    "baseline nDCG@10": c["mean_a"], "hybrid nDCG@10": c["mean_b"],
                                    "relative": f"{100 * c['rel_diff']:+.1f}%",
                                    "ci95": f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", "p": c["p_permutation"]})
    for key in {(c["hybrid"], c["baseline"], c["metric"]) for c in comps}:  # Holm over the lengths of one comparison
        idx = [i for i, c in enumerate(comps) if (c["hybrid"], c["baseline"], c["metric"]) == key]
        for i, p in holm({str(i): comps[i]["p"] for i in idx}).items():
            comps[int(i)]["p (Holm, lengths)"] = p
    for b in bases:  # Holm over the buckets of one baseline
        idx = [i for i, r in enumerate(buckets) if r["baseline"] == b]
        for i, p in holm({str(i): buckets[i]["p"] for i in idx}).items():
            buckets[int(i)]["p (Holm, buckets)"] = p
    stem = Path(a.config).stem
    name = a.name or f"short-history-{stem}"
    cmd = (f"python benchmarks/short_history.py --config {a.config} --teachers {a.teachers}"
           + (f" --bundle {a.bundle}" if a.bundle else "") + f" --lengths {a.lengths} --baselines {a.baselines}"
           + f" --short-table {a.short_table}")
    cols = [c for c in comps[0] if not c.startswith("_") and c not in ("metric", "p (Holm, lengths)")]
    trained_short = sorted({T for M in models for T, _ in M.cf_short})
    md = [f"# Short histories: the hybrid vs tuned CF on each user's last N items ({stem})", "",
          f"Warm test users of `{stem}`'s split, each history cut to its last N positives (`whole`: uncut); the "
          "held-out items and what leaves the ranking are the same for every N. The hybrid is "
          f"{len(teachers)} training seed(s) of the teacher (per-user mean; `+-` the seeds' sd): as trained and "
          "calibrated once on whole histories"
          + (f" (with the CF tables training chose for histories of at most {', '.join(map(str, trained_short))} "
             "item(s), each on validation histories cut that short: `cf.short_history`)" if trained_short else "")
          + (", and with its EASE CF part chosen for N as training chooses it (lambda and side-information weight on "
             "validation histories cut to N) and the CF score's blend weight rescaled on the same validation "
             f"({', '.join(f'{x:g}' for x in CF_SCALES)}), the content tower as trained" if retune else "")
          + (f"; and with one CF table for every history of at most {a.short_table} items (chosen, and its scale, on "
             f"validation histories cut to {a.short_table}; longer histories keep the trained CF part): what a bundle "
             "carrying such a table (cf.short_history) would answer" if short_table is not None else "")
          + (". The int8 bundle is the runtime's answer" if a.bundle else "")
          + ". Each baseline is tuned on validation twice: as usual (whole histories), and on validation histories "
          "cut to the same N (`genre ab --history-last N`). `ci95`: paired bootstrap over users; `p`: sign-flip "
          "permutation; Holm over the lengths of each comparison.", "", f"Command: `{cmd}`", "",
          "## nDCG@10 per history length", "", markdown_table(rows, list(rows[0])), "",
          "## Hybrid minus each baseline, nDCG@10", "",
          markdown_table([c for c in comps if c["metric"] == "ndcg@10"], cols + ["p (Holm, lengths)"]), "",
          *(["## Whole histories, within quartiles of the users' own history lengths", "",
             markdown_table(buckets, list(buckets[0])), ""] if buckets else []),
          "## Recall@20", "",
          markdown_table([c for c in comps if c["metric"] == "recall@20"], cols + ["p (Holm, lengths)"]), "",
          machine_markdown(machine()), ""]
    write_report(Path(a.out), name, {"config": a.config, "teachers": teachers, "bundle": a.bundle, "lengths": lengths,
                                     "baselines": bases, "cf_scales": list(CF_SCALES) if retune else None,
                                     "short_table": ({"max_history": a.short_table, "lambda": short_table[1]["lambda"],
                                                      "side_weight": short_table[1]["side_weight"]}
                                                     if short_table is not None else None),
                                     "teachers_cf_short": [M.report.get("cf_short") and [
                                         {k: r[k] for k in ("max_history", "used", "scale", "lambda", "side_weight",
                                                            "neighbors")} for r in M.report["cf_short"]]
                                                           for M in models],
                                     "command": cmd, "rows": rows,
                                     "comparisons": [{k: v for k, v in c.items() if k != "_ci"} | {"ci95": c["_ci"]}
                                                     for c in comps],
                                     "buckets": buckets, "raw": raw, "machine": machine()}, "\n".join(md))
    print("\n".join(md[:-2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
