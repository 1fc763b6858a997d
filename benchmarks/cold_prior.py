"""Cold items with a prior (popularity read from their text, or release recency): does it close the gap to
the zero-shot encoder?

    python benchmarks/cold_prior.py --config ml-100k-quick \\
        --teachers runs/headline/s0,runs/headline/s1,runs/headline/s2 --out benchmarks/results
    python benchmarks/cold_prior.py ... --prior release-recency      # -> cold-prior-recency-ml-100k-quick.*

A trained hybrid ranks an item it was never trained on by its content score alone: the CF part and the
popularity feature are zero there, so nothing tells a new blockbuster from an obscure title. Here a ridge
regression from each teacher's own item embeddings to its popularity feature (``log1p(count)`` scaled, as
the blend reads it) is fitted on the warm items (ridge strength by 5-fold cross-validation over them), and
its prediction for the cold items is added to the teacher's score with a weight ``s`` (in units of the
scores' spread over the cold candidates). ``s`` is chosen per teacher on cold-validation nDCG@10 (ties:
the smaller), cold-test is scored once with the choice, and also without its 1 and 3 items with the most
positives (``Split.without_top_items``: one film decides the full cold-test set on ml-100k). On a device
the prior is one vector: ``w . e + b`` for an item embedding ``e``.

``--prior release-recency``: new items that are new releases are what people watch (on ml-100k, 1997-98
films hold 94% of the cold-test positives), so the prior is instead ``0.5 ** (age / h)``, the age being the
years from the item's release (mid-year of its ``year``; unknown years get the candidates' mean) to each
user's request time; the half-life ``h`` (``RECENCY_HALF_LIVES``) is chosen with ``s`` on cold-validation.
The same feature a device can compute from the catalog's ``year`` and the request's ``now``.

Compared per user (per-user nDCG@10 averaged over the teacher seeds): the prior against the teachers
alone, and against the zero-shot encoder; paired bootstrap CI, sign-flip permutation p, Holm over the
cold-test rows.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402
from teacher_args import add_teacher_args, load_teachers  # noqa: E402

PRIOR_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
RIDGE_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
DROPS = (0, 1, 3)
RECENCY_HALF_LIVES = (0.5, 1.0, 2.0, 4.0, 8.0)  # years
PRIORS = ("text-popularity", "release-recency")
SECONDS_PER_YEAR = 365.25 * 86400


def ridge(X: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """(w, b) minimising |X w + b - y|^2 + lam |w|^2 (the intercept is not penalised)."""
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    mu, ym = X.mean(0), y.mean()
    Xc = X - mu
    w = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ (y - ym))
    return w, float(ym - mu @ w)


def fit_prior(X: np.ndarray, y: np.ndarray, lams=RIDGE_GRID, folds: int = 5, seed: int = 0):
    """(w, b, lam): ridge from item embeddings ``X`` to their popularity ``y``, ``lam`` the one of ``lams``
    with the least held-out squared error over ``folds`` random folds of these (warm) items, refit on all."""
    if len(y) < folds:
        raise ValueError(f"fit_prior needs at least {folds} items, got {len(y)}")
    fold = np.random.default_rng(seed).permutation(len(y)) % folds

    def cv_error(lam):
        err = 0.0
        for k in range(folds):
            w, b = ridge(X[fold != k], y[fold != k], lam)
            err += float(((X[fold == k] @ w + b - y[fold == k]) ** 2).sum())
        return err

    lam = min(lams, key=lambda v: (cv_error(v), v))
    w, b = ridge(X, y, lam)
    return w, b, lam


def release_recency(year: np.ndarray, request_times: np.ndarray, half_life: float) -> np.ndarray:
    """[users, items]: ``0.5 ** (age / half_life)``, age in years from each item's release (the middle of its
    ``year``) to each user's request time (unix seconds), not below 0; NaN where the year is unknown (0)."""
    if half_life <= 0:
        raise ValueError(f"half_life must be > 0 years, not {half_life}")
    req = 1970.0 + np.asarray(request_times, np.float64)[:, None] / SECONDS_PER_YEAR
    y = np.asarray(year, np.float64)[None, :]
    out = 0.5 ** (np.maximum(0.0, req - (y + 0.5)) / half_life)
    out[:, np.asarray(year) == 0] = np.nan
    return out


def with_prior(S: np.ndarray, prior: np.ndarray, items: np.ndarray, s: float) -> np.ndarray:
    """Scores ``S`` [users, all items] plus ``s`` x the prior ([items], or [users, items] for a prior that
    depends on the user's request time), both in units of their spread over ``items`` (the candidates being
    ranked; NaN prior entries count as the candidates' mean); other columns are returned unchanged."""
    out = np.array(S, np.float64)
    p = np.asarray(prior, np.float64)[..., items]
    p = np.where(np.isnan(p), np.nanmean(p) if np.isfinite(p).any() else 0.0, p)
    out[:, items] += s * out[:, items].std() * (p - p.mean()) / (p.std() + 1e-12)
    return out


def choose_scale(valid_ndcg: dict) -> float | tuple:
    """The weight (or ``(variant, weight)`` key) with the best cold-validation nDCG@10 (ties: the smaller
    weight, closer to the teacher; then the first variant)."""
    keys = list(valid_ndcg)
    return max(keys, key=lambda k: (valid_ndcg[k], -(k[-1] if isinstance(k, tuple) else k), -keys.index(k)))


def main(argv: list[str] | None = None) -> int:
    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge_export.ab import Arm, holm, paired_stats
    from genre_edge_export.evaluate import evaluate
    from genre_edge_export.scoring import Scorer, popularity_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_teacher_args(ap)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--prior", choices=PRIORS, default=PRIORS[0],
                    help="text-popularity: ridge from item embeddings to popularity; release-recency: 0.5 ** (age / h)")
    a = ap.parse_args(argv)
    cpath, prep, teachers, models = load_teachers(ap, a)
    sp = prep.split
    ids, users_all = list(prep.data.items.ids), list(prep.data.users)
    if len(sp.cold_items) == 0 or len(sp.cold_valid_items) == 0:
        ap.error(f"--config {a.config}: its split has no cold-test or no cold-validation items")
    recency = a.prior == "release-recency"
    year = np.asarray(prep.data.items.year)
    if recency and not (year[np.union1d(sp.cold_items, sp.cold_valid_items)] > 0).any():
        ap.error(f"--config {a.config}: no cold item has a release year: --prior release-recency needs them")

    # the views: cold-validation (where s is chosen; also without its top item, for the record) and cold-test
    # without its top 0 / 1 / 3 items
    views = [("cold_valid", 0), ("cold_valid", 1)] + [("cold", d) for d in DROPS]
    splits = {v: sp.without_top_items(*v) for v in views}
    H = {w: sp.histories(w) for w in ("cold_valid", "cold")}
    everyone = np.arange(sp.n_users)

    def per_user(S, view):
        sv, _ = splits[view]
        out = {"ndcg@10": []}
        evaluate(lambda us: S[us], sv, view[0], n_neg=1, per_user_out=out, ranking_only=True)
        return np.asarray(out["ndcg@10"])

    zero = {w: Arm("zero-shot", ids, H[w], users_all, split=sp, prep=prep).score(everyone) for w in H}
    zero_pu = {v: per_user(zero[v[0]], v) for v in views}
    # a small cold set can be left with no held-out positives once its top items are dropped: no such view
    views = [v for v in views if len(zero_pu[v])]
    if ("cold_valid", 0) not in views:
        ap.error(f"--config {a.config}: no user has a held-out positive among its cold-validation items")
    # the prior's variants, each one array per held-out set: release recency does not depend on the teacher
    # (one per half-life, as of each user's request time); the text prior is fitted per teacher below
    fixed = {f"h={h:g}y": {w: release_recency(year, sp.request_times(w), h) for w in H}
             for h in RECENCY_HALF_LIVES} if recency else None

    def key(v, label, s):
        return f"{v[0]}-{v[1]}{' ' + label if label else ''} s={s:g}"

    warm = sp.warm_items
    seeds, teacher_pu, prior_pu = [], {v: [] for v in views}, {v: [] for v in views}
    for t, M in zip(teachers, models):
        _, rec = M.modules()
        info = {"teacher": t}
        if recency:
            variants = fixed
        else:
            w, b, lam = fit_prior(M.emb[warm], prep.pop[warm])
            prior = M.emb @ w + b
            variants = {"": {w_: prior for w_ in H}}
            # in-sample: how much of popularity the text predicts
            info.update({"ridge lambda (5-fold CV, warm items)": lam,
                         "prior vs popularity, warm items (r)": float(np.corrcoef(prior[warm], prep.pop[warm])[0, 1])})
        S, curve = {}, {}
        for which in H:
            S[which] = Scorer(M.conf, rec, M.emb, H[which],
                              pop_rows=popularity_rows(rec, sp, sp.request_times(which)))(everyone)
        for v in views:
            items = splits[v][0].cold_items if v[0] == "cold" else splits[v][0].cold_valid_items
            alone = per_user(S[v[0]], v)  # s = 0: the teacher itself, whatever the variant
            curve[v] = {(label, s): (per_user(with_prior(S[v[0]], P[v[0]], items, s), v) if s else alone)
                        for label, P in variants.items() for s in PRIOR_GRID}
        label, choice = choose_scale({k: float(c.mean()) for k, c in curve[("cold_valid", 0)].items()})
        for v in views:
            teacher_pu[v].append(curve[v][(label, 0.0)])
            prior_pu[v].append(curve[v][(label, choice)])
        info["s chosen on cold-valid"] = choice
        if recency:
            info["half-life chosen (years)"] = label[2:-1] if choice else "-"
        seeds.append({**info, **{key(v, lb, s_): float(c.mean()) for v in views for (lb, s_), c in curve[v].items()}})

    def label_of(v):
        return ("cold validation" if v[0] == "cold_valid" else "cold test") + (f" without top {v[1]}" if v[1] else "")

    rows = []
    for v in views:
        tv, pv = np.mean(teacher_pu[v], 0), np.mean(prior_pu[v], 0)
        dropped = ", ".join(prep.data.items.title[i] for i in splits[v][1]) or "-"
        for arm, ref, ref_name in ((pv, tv, "teachers alone"), (pv, zero_pu[v], "zero-shot")):
            st = paired_stats(ref, arm, n_boot=a.bootstrap)
            rows.append({"items": label_of(v), "without": dropped, "users": st["users"], "vs": ref_name,
                         "reference": st["mean_a"], "teachers + prior": st["mean_b"],
                         "teachers sd": float(np.std([x.mean() for x in prior_pu[v]], ddof=1)) if len(teachers) > 1 else 0.0,
                         "diff": f"{st['diff']:+.4f} ({100 * st['rel_diff']:+.1f}%)",
                         "95% CI": f"[{st['ci95'][0]:+.4f}, {st['ci95'][1]:+.4f}]", "p": st["p_permutation"],
                         "stats": st})
    # the test rows are one family; validation rows are where s was chosen (in-sample), shown for the record
    adj = holm({str(i): r["p"] for i, r in enumerate(rows) if r["items"].startswith("cold test")})
    for i, r in enumerate(rows):
        r["p (Holm, test rows)"] = adj.get(str(i), "in-sample")
    labels = list(fixed) if recency else [""]
    curve_rows = [{**({"half-life": lb[2:]} if lb else {}), "s": f"{s:g}",
                   **{label_of(v): f"{np.mean([x[key(v, lb, s)] for x in seeds]):.4f}" for v in views}}
                  for lb in labels for s in PRIOR_GRID if s or lb == labels[0]]
    res = {"machine": machine(), "config": a.config, "prior": a.prior, "teachers": teachers, "grid": list(PRIOR_GRID),
           **({"half_lives_years": list(RECENCY_HALF_LIVES)} if recency else {"ridge_grid": list(RIDGE_GRID)}),
           "seeds": seeds, "rows": rows,
           "command": "python benchmarks/cold_prior.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    cols = ["items", "without", "users", "vs", "reference", "teachers + prior", "diff", "95% CI", "p",
            "p (Holm, test rows)"]
    if recency:
        title = "a release-recency prior"
        how = ("The prior `0.5 ** (age / h)`, age in years from each item's release (the middle of its year) to each "
               f"user's request time, h from {list(RECENCY_HALF_LIVES)} years, added to the teacher's cold scores with "
               f"weight s from {list(PRIOR_GRID)} (units of the scores' spread over the candidates), h and s chosen per "
               "teacher on cold-validation nDCG@10, test scored once with them.")
        seed_cols = ["teacher", "half-life chosen (years)", "s chosen on cold-valid"]
    else:
        title = "a popularity prior read from the item text"
        how = ("Ridge from each teacher's item embeddings to its popularity feature, fitted on the warm items (lambda "
               f"from {list(RIDGE_GRID)} by 5-fold CV there); its prediction added to the teacher's cold scores with "
               f"weight s from {list(PRIOR_GRID)} (units of the scores' spread over the candidates), s chosen per "
               "teacher on cold-validation nDCG@10, test scored once with it.")
        seed_cols = ["teacher", "ridge lambda (5-fold CV, warm items)", "prior vs popularity, warm items (r)",
                     "s chosen on cold-valid"]
    md = [f"# Cold items: the teachers + {title} ({a.config})", "",
          f"Reproduce: `{res['command']}`", "",
          how + f" Per-user nDCG@10 averaged over the {len(teachers)} seeds; paired bootstrap 95% CI over users, "
          "sign-flip permutation p, Holm over the cold-test rows (cold-validation is where the prior was chosen: its "
          "rows are in-sample, for the record).", "",
          markdown_table(rows, cols), "",
          "Per teacher seed (the choice, and every variant for the record):", "",
          markdown_table([{k: x[k] for k in seed_cols} for x in seeds], seed_cols), "",
          "nDCG@10 by variant, mean over the seeds (a curve for the record, not a choice; s = 0 is the teachers "
          "alone):", "",
          markdown_table(curve_rows, list(curve_rows[0])), "",
          "zero-shot encoder: " + ", ".join(f"{label_of(v)} {zero_pu[v].mean():.4f}" for v in views), "",
          machine_markdown(res["machine"]), ""]
    stem = Path(cpath).stem
    write_results(a.out, a.name or (f"cold-prior-recency-{stem}" if recency else f"cold-prior-{stem}"), res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
