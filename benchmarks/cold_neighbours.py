"""New items scored through their nearest trained-on items' CF scores: is the language model worth more to new
items as a similarity that lends them CF evidence than as the trained content tower?

    python benchmarks/cold_neighbours.py --config ml-100k-quick \\
        --teachers runs/headline/s0,runs/headline/s1,runs/headline/s2 --folds 0-9 --work runs/cold-folds

A new item has no interactions, so CF ranks it at the random level and the trained hybrid ranks it by its
content score alone. Here it borrows CF evidence instead: its ``k`` nearest warm items by the cosine of the
*pretrained* encoder's item-text embeddings (no training), weighted ``max(cos, 0) ** p`` and normalised, and a
user's score for it is that weighted mean of the user's CF scores for those items (``ease-recency``, tuned on
validation as its baseline row is; each user's scores standardised over the warm items, the items the user has
seen counting as the user's best). Two arms use it:

- **neighbours** (training-free): the zero-shot encoder's score plus ``beta`` x the borrowed CF score (both
  standardised per user over the candidates; ``beta`` = inf: the borrowed score alone, 0: zero-shot);
- **teacher + neighbours**: the same added to a trained teacher's score instead of zero-shot's.

``k``, ``p`` and ``beta`` (:data:`GRID_K`, :data:`GRID_P`, :data:`GRID_BETA`) are chosen on cold-validation
nDCG@10 (per teacher for the second arm; ties: the first in grid order, i.e. fewer neighbours and less weight)
and the new items are scored once with the choice. Splits: the config's own (the time split's 216 late films on
ml-100k; ``--teachers``: its trained seeds) and, with ``--folds``, random item folds as ``cold_folds.py`` deals
them (its fold teachers in ``--work``, trained if missing). Each new-item set also without its top film (by
held-out positives). Paired over users (per-user nDCG@10; teacher seeds averaged per user), bootstrap CI,
sign-flip p, Holm over the test rows of each split; folds also pooled over users as ``cold_folds.py`` does.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_folds import fold_config, parse_folds, pooled  # noqa: E402
from machine import machine, machine_markdown  # noqa: E402
from teacher_args import trained, zscore  # noqa: E402

GRID_K = (30, 100, 300, 1000)
GRID_P = (1.0, 4.0)
GRID_BETA = (0.0, 0.5, 1.0, 2.0, 4.0, math.inf)
DROPS = (0, 1)
CF_BASELINE = "ease-recency"
COMPARISONS = (("zero-shot", "neighbours"), ("teacher", "neighbours"), ("teacher", "teacher + neighbours"))


def cosine(emb: np.ndarray, cand: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """[len(cand), len(pool)]: the cosine of each candidate's ``emb`` row with each pool item's."""
    e = np.asarray(emb, np.float64)
    e = e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)
    return e[cand] @ e[pool].T


def neighbour_weights(sim: np.ndarray, k: int, p: float) -> np.ndarray:
    """From :func:`cosine`'s ``sim``: each candidate's ``k`` most similar pool items, weighted ``max(cos, 0) ** p``,
    rows summing to 1 (all zero where no neighbour is similar at all)."""
    if k < 1 or p <= 0:
        raise ValueError(f"neighbour_weights needs k >= 1 and p > 0, not k={k}, p={p}")
    k = min(k, sim.shape[1])
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    rows = np.arange(len(sim))[:, None]
    W = np.zeros_like(sim)
    W[rows, top] = np.maximum(sim[rows, top], 0.0) ** p
    return W / np.maximum(W.sum(1, keepdims=True), 1e-12)


def standardised_cf(cf: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """[users, len(pool)]: CF scores over the pool items, z-scored per user; an item the baseline leaves out of a
    user's ranking (seen: a score of -1e9 or not finite) counts as that user's best score."""
    s = np.asarray(cf, np.float64)[:, pool]
    bad = ~np.isfinite(s) | (s <= -1e8)
    best = np.where(bad, -np.inf, s).max(1, keepdims=True)
    return zscore(np.where(bad, np.where(np.isfinite(best), best, 0.0), s))


def blend(base: np.ndarray, borrowed: np.ndarray, beta: float) -> np.ndarray:
    """``base + beta * borrowed`` (both standardised per user over the candidates); beta = inf: borrowed alone."""
    return zscore(borrowed) if math.isinf(beta) else zscore(base) + beta * zscore(borrowed)


def choose(valid: dict) -> tuple:
    """The grid key with the best cold-validation nDCG@10; ties: the first in grid order."""
    keys = list(valid)
    return max(keys, key=lambda key: (valid[key], -keys.index(key)))


def split_views(cpath: Path, teachers: list[str], data_dir: str | None) -> dict:
    """For one split: per drop level, each arm's per-user cold-test nDCG@10 (``{"users", "ndcg@10"}``; the
    teacher arms averaged over ``teachers``), the choices made on cold-validation, and the split's facts."""
    from genre_edge_export.ab import Arm
    from genre_edge_export.baselines import interaction_matrix, scores_for, tune
    from genre_edge_export.evaluate import evaluate
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.scoring import zero_shot_scores
    from genre_edge_export.train_config import load_config

    prep = Prepared(load_config(cpath), data_dir)
    sp, ids, names = prep.split, list(prep.data.items.ids), list(prep.data.users)
    if len(sp.cold_items) == 0 or len(sp.cold_valid_items) == 0:
        raise ValueError(f"{cpath}: its split has no cold-test or no cold-validation items")
    emb = prep.pretrained_embeddings()
    cf_model, cf_params, _ = tune(CF_BASELINE, sp, interaction_matrix(sp))
    every, pool = np.arange(sp.n_users), sp.warm_items
    grid = [(k, p, b) for k in GRID_K for p in GRID_P for b in GRID_BETA]
    views = [("cold_valid", 0)] + [("cold", d) for d in DROPS]
    cut = {v: sp.without_top_items(*v) for v in views}

    scored = {}  # which -> the candidates, zero-shot's and each teacher's scores, the borrowed ones per (k, p)
    for which, cand in (("cold_valid", sp.cold_valid_items), ("cold", sp.cold_items)):
        hist, when = sp.histories(which), sp.request_times(which)
        Z = standardised_cf(scores_for(cf_model, hist, when)(every), pool)
        sim = cosine(emb, cand, pool)
        scored[which] = {
            "cand": cand,
            "zero-shot": zero_shot_scores(emb, hist, prep.conf.user_model.max_history)(every)[:, cand],
            "teachers": [np.asarray(Arm(t, ids, hist, names, sp, prep, when=when).score(every), np.float64)[:, cand]
                         for t in teachers],
            "borrowed": {(k, p): Z @ neighbour_weights(sim, k, p).T for k in GRID_K for p in GRID_P}}

    def per_user(view, S_cand) -> dict:
        which = view[0]
        S = np.full((sp.n_users, sp.n_items), -1e9)
        S[:, scored[which]["cand"]] = S_cand
        out: dict = {}
        evaluate(lambda us: S[us], cut[view][0], which, per_user_out=out, ranking_only=True)
        return {"users": out.get("users", np.zeros(0, int)), "ndcg@10": out.get("ndcg@10", np.zeros(0))}

    def blended(base_of, key) -> dict:
        """Per view, the per-user nDCG@10 of ``base_of(which)`` + the borrowed score at grid point ``key``."""
        return {v: per_user(v, blend(base_of(v[0]), scored[v[0]]["borrowed"][key[:2]], key[2])) for v in views}

    def chosen(base_of) -> tuple:
        """The grid point whose blend with ``base_of`` is best on cold-validation (the cold test is not read)."""
        base, borrowed = base_of("cold_valid"), scored["cold_valid"]["borrowed"]
        return choose({g: per_user(("cold_valid", 0), blend(base, borrowed[g[:2]], g[2]))["ndcg@10"].mean()
                       for g in grid})

    def seed_mean(per_seed: list[dict]) -> dict:
        """Per view, each user's nDCG@10 averaged over the teacher seeds (the same users in each)."""
        return {v: {"users": per_seed[0][v]["users"], "ndcg@10": np.mean([x[v]["ndcg@10"] for x in per_seed], 0)}
                for v in views}

    out = {"cf": {"baseline": CF_BASELINE, "params": {k: str(v) for k, v in cf_params.items()}},
           "cold items": int(len(sp.cold_items)), "cold-validation items": int(len(sp.cold_valid_items)),
           "without": {d: ", ".join(prep.data.items.title[i] for i in cut[("cold", d)][1]) or "-" for d in DROPS}}
    def zero_of(which: str) -> np.ndarray:
        return scored[which]["zero-shot"]

    nb_key = chosen(zero_of)  # the training-free arm
    arms = {"zero-shot": {v: per_user(v, zscore(zero_of(v[0]))) for v in views}, "neighbours": blended(zero_of, nb_key)}
    out["neighbours chosen (k, p, beta)"] = str(nb_key)
    if teachers:
        teacher_of = [lambda w, i=i: scored[w]["teachers"][i] for i in range(len(teachers))]
        keys = [chosen(t) for t in teacher_of]
        arms["teacher"] = seed_mean([{v: per_user(v, zscore(t(v[0]))) for v in views} for t in teacher_of])
        arms["teacher + neighbours"] = seed_mean([blended(t, k) for t, k in zip(teacher_of, keys)])
        out["teacher + neighbours chosen (k, p, beta), per teacher"] = [str(k) for k in keys]
    out["arms"] = arms
    return out


def compare_rows(label: str, res: dict, n_boot: int) -> list[dict]:
    """The paired comparisons of one split's test views (Holm over them)."""
    from genre_edge_export.ab import holm, paired_stats

    rows = []
    for d in DROPS:
        v = ("cold", d)
        for a, b in COMPARISONS:
            if a not in res["arms"] or b not in res["arms"]:
                continue
            A, B = res["arms"][a][v], res["arms"][b][v]
            if not len(A["ndcg@10"]):
                continue
            st = paired_stats(A["ndcg@10"], B["ndcg@10"], n_boot=n_boot)
            rows.append({"split": label, "without": res["without"][d], "users": st["users"], "A": a, "B": b,
                         "A nDCG@10": st["mean_a"], "B nDCG@10": st["mean_b"],
                         "diff": f"{st['diff']:+.4f} ({100 * st['rel_diff']:+.1f}%)",
                         "95% CI": f"[{st['ci95'][0]:+.4f}, {st['ci95'][1]:+.4f}]", "p": st["p_permutation"]})
    adj = holm({str(i): r["p"] for i, r in enumerate(rows)})
    for i, r in enumerate(rows):
        r["p (Holm)"] = adj[str(i)]
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge.errors import GenreError
    from genre_edge_export.ab import paired_stats
    from genre_edge_export.train_config import packaged_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="ml-100k-quick", help="training config (its data and split)")
    ap.add_argument("--teachers", default="", help="comma-separated teachers of --config's split (training seeds); "
                    "none: the training-free arm only")
    ap.add_argument("--folds", default="", help="also random item folds, e.g. 0-9 (cold_folds.py's deal)")
    ap.add_argument("--cold-folds", type=int, default=10)
    ap.add_argument("--fold-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="training seed of the fold teachers")
    ap.add_argument("--work", default="runs/cold-folds", help="fold configs and teachers (trained if missing)")
    ap.add_argument("--dir", dest="data_dir", default=None, help="data cache folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cpath = Path(a.config) if Path(a.config).is_file() else packaged_config(a.config)
    teachers = [t.strip() for t in a.teachers.split(",") if t.strip()]
    if a.folds and a.cold_folds < 3:
        ap.error(f"--cold-folds must be at least 3 (a test fold, a validation fold, training), not {a.cold_folds}")
    try:
        folds = parse_folds(a.folds, a.cold_folds) if a.folds else []
    except ValueError as exc:
        ap.error(str(exc))

    try:
        splits = {"config's split": split_views(cpath, teachers, a.data_dir)}
    except (ValueError, GenreError) as exc:  # no new items to rank or choose on; a teacher that is not one
        ap.error(str(exc))
    for f in folds:
        fc = fold_config(a.config, Path(a.work), f, a.cold_folds, a.fold_seed)
        trained(fc, Path(a.work) / f"fold{f}", a.seed, a.data_dir)
        splits[f"fold {f}"] = split_views(fc, [str(Path(a.work) / f"fold{f}")], a.data_dir)

    rows = [r for label, res in splits.items() for r in compare_rows(label, res, a.bootstrap)]
    pooled_rows = []
    fold_res = [res for label, res in splits.items() if label.startswith("fold")]
    for d in DROPS if fold_res else ():
        for x, y in COMPARISONS:
            per = [{"A": r["arms"][x][("cold", d)], "B": r["arms"][y][("cold", d)]} for r in fold_res]
            A, B = pooled(per, "ndcg@10")
            st = paired_stats(A, B, n_boot=a.bootstrap)
            fx, fy = ([r["arms"][arm][("cold", d)]["ndcg@10"].mean() for r in fold_res] for arm in (x, y))
            pooled_rows.append({"over": f"{len(fold_res)} folds" + (", each without its top film" if d else ""),
                                "users": st["users"], "A": x, "B": y,
                                "A (mean of folds)": float(np.mean(fx)), "B (mean of folds)": float(np.mean(fy)),
                                "folds B ahead": f"{sum(b > a for a, b in zip(fx, fy))} of {len(fold_res)}",
                                "pooled diff": f"{st['diff']:+.4f} ({100 * st['rel_diff']:+.1f}%)",
                                "pooled 95% CI": f"[{st['ci95'][0]:+.4f}, {st['ci95'][1]:+.4f}]",
                                "p": st["p_permutation"]})
    valid_rows = [{"split": label, **{f"{arm} (cold-validation)": float(res["arms"][arm][("cold_valid", 0)]["ndcg@10"].mean())
                                      for arm in res["arms"]},
                   "neighbours chosen (k, p, beta)": res["neighbours chosen (k, p, beta)"],
                   "teacher + neighbours chosen": ", ".join(res.get("teacher + neighbours chosen (k, p, beta), per teacher", []))}
                  for label, res in splits.items()]
    stem = cpath.stem
    cmd = "python benchmarks/cold_neighbours.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary = {label: {k: v for k, v in res.items() if k != "arms"} for label, res in splits.items()}
    md = [f"# New items through their content neighbours' CF scores ({stem})", "",
          f"Reproduce: `{cmd}`", "",
          f"A new item's borrowed score: the mean of the user's `{CF_BASELINE}` scores (tuned on validation) over its k "
          "nearest warm items by the pretrained encoder's text cosine, weighted cos^p. `neighbours`: zero-shot + beta x "
          "borrowed (no training); `teacher + neighbours`: the trained teacher's score + beta x borrowed. k from "
          f"{list(GRID_K)}, p from {list(GRID_P)}, beta from {list(GRID_BETA)} (inf: borrowed alone), chosen on "
          "cold-validation nDCG@10 (per teacher); the new items scored once. Paired over users (teacher seeds averaged "
          "per user), bootstrap 95% CI, sign-flip p, Holm over each split's rows.", "",
          *(["## Over the random folds", "", markdown_table(pooled_rows, list(pooled_rows[0])), ""] if pooled_rows else []),
          "## Per split (new items: cold test)", "", markdown_table(rows, list(rows[0])), "",
          "## Where the choices were made (cold-validation nDCG@10, in-sample)", "",
          markdown_table(valid_rows, list(valid_rows[0])), "",
          machine_markdown(machine()), ""]
    res = {"machine": machine(), "config": a.config, "teachers": teachers, "folds": folds, "command": cmd,
           "grid": {"k": list(GRID_K), "p": list(GRID_P), "beta": [str(b) for b in GRID_BETA]},
           "splits": summary, "rows": rows, "pooled": pooled_rows, "validation": valid_rows}
    write_results(a.out, a.name or f"cold-neighbours-{stem}", res, "\n".join(md))
    print("\n".join(md[:-2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
