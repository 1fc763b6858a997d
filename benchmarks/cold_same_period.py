"""Cold items: would choices made on new items of the test's own period carry over, where today's do not?

    python benchmarks/cold_same_period.py --config ml-100k-quick \\
        --teachers runs/headline/s0,runs/headline/s1,runs/headline/s2 --out benchmarks/results

The time split's cold-validation items are first seen *before* the cold-test ones (ml-100k: time quantile
[0.4, 0.5) against >= 0.5), and every choice for new items measured on them (a popularity or a release-recency
prior, the zero-shot encoder's score as a second view, CF borrowed through text similarity) won there and did not
carry over to the cold test. Is the period the reason, and could a model that keeps re-choosing do better? The
cold-test items are ranked

- by the teachers alone and by the zero-shot encoder alone (no choice);
- by the teachers + a choice made on the cold-validation items (``before``: what the project does today);
- ``halves``: the items dealt at random into two halves (``--deals`` deals, seeds 0 to N-1), each half ranked with
  the choice made on the other (``same period``; cross-fitted, so no half is scored with a choice it took part in).
  An upper bound: no deployed model can validate on the period it serves;
- ``windows``: the items cut by first event into ``--windows`` consecutive windows, each ranked with the choice
  made on the previous window's items from their events before the window starts (``previous window``; the first
  window's is the cold-validation choice): what a model re-calibrated as new items come in could do.

The choices (each teacher seed chooses its own; ties go to the smaller weight, closer to the teacher alone):
``mix``: ``(1 - w) z(teacher) + w z(zero-shot)``, each score standardised per user over the set's items, w from
``cold_folds.MIX_WEIGHTS`` (w = 1 is the zero-shot encoder: choosing between the two models is in the grid);
``release-recency`` and ``text-popularity``: the priors of ``cold_prior.py`` (its grids; the recency prior as of
each set's own request times).

Every arm of a scheme ranks the same candidates (one set's items) for the same users. A user's value is the mean of
their nDCG@10 over the sets where they have a held-out positive, averaged over the teacher seeds; rows compare arms
paired over users (bootstrap 95% CI, sign-flip permutation p, Holm over each table's rows). Views: all cold-test
items, and without the one with the most positives (``Split.without_top_items``; on ml-100k *Good Will Hunting*
holds 15% of the positives and most of the zero-shot encoder's hits).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_folds import MIX_WEIGHTS  # noqa: E402
from cold_prior import PRIOR_GRID, RECENCY_HALF_LIVES, choose_scale, fit_prior, release_recency, with_prior  # noqa: E402
from machine import machine, machine_markdown  # noqa: E402
from teacher_args import add_teacher_args, load_teachers, zscore  # noqa: E402

FAMILIES = ("mix", "release-recency", "text-popularity")
SCHEMES = {"halves": "same period", "windows": "previous window"}


def deal_halves(items: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``items`` dealt at random (``seed``) into two halves of near-equal size, each sorted."""
    items = np.asarray(items)
    perm = np.random.default_rng([seed, 7]).permutation(len(items))
    half = (len(items) + 1) // 2
    return np.sort(items[perm[:half]]), np.sort(items[perm[half:]])


def time_windows(items: np.ndarray, first_seen: np.ndarray, n: int) -> list[tuple[np.ndarray, int]]:
    """``items`` in order of their first event (``first_seen``, indexed by item), cut into ``n`` consecutive windows
    of near-equal item count: [(the window's items sorted, the time its first item was first seen)]."""
    items = np.asarray(items)
    order = items[np.argsort(first_seen[items], kind="stable")]
    return [(np.sort(w), int(first_seen[w[0]])) for w in np.array_split(order, n) if len(w)]


def cold_subset(sp, items: np.ndarray, before: float | None = None):
    """A copy of ``sp`` whose cold test is ``items`` only (their events, those before ``before`` if given)."""
    keep = np.zeros(sp.n_items, bool)
    keep[items] = True
    inter = sp.cold_test.take(keep[sp.cold_test.item])
    if before is not None:
        inter = inter.take(inter.time < before)
    return replace(sp, cold_items=np.asarray(items, np.int32), cold_test=inter)


def pick(chooser: dict, fallback):
    """The choice with the best mean of ``chooser`` (choice -> per-user nDCG@10; ties: the smaller weight), or
    ``fallback`` when the chooser set has no user with a held-out positive."""
    if not chooser or not len(next(iter(chooser.values()))):
        return fallback
    return choose_scale({k: float(v.mean()) for k, v in chooser.items()})


def main(argv: list[str] | None = None) -> int:
    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge_export.ab import Arm, holm, paired_stats
    from genre_edge_export.evaluate import evaluate
    from genre_edge_export.scoring import Scorer, popularity_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_teacher_args(ap)
    ap.add_argument("--deals", type=int, default=10, help="random deals of the cold-test items into two halves")
    ap.add_argument("--windows", type=int, default=4, help="consecutive windows of the cold-test items by first event")
    ap.add_argument("--bootstrap", type=int, default=2000)
    a = ap.parse_args(argv)
    if a.deals < 1 or a.windows < 2:
        ap.error(f"--deals must be at least 1 and --windows at least 2, not {a.deals} and {a.windows}")
    cpath, prep, teachers, models = load_teachers(ap, a)
    sp = prep.split
    if len(sp.cold_items) < 2 * a.windows or len(sp.cold_valid_items) == 0:
        ap.error(f"--config {a.config}: its split needs at least 2 x --windows ({2 * a.windows}) cold-test items and "
                 f"some cold-validation items (it has {len(sp.cold_items)} and {len(sp.cold_valid_items)})")
    ids, users_all, everyone = list(prep.data.items.ids), list(prep.data.users), np.arange(sp.n_users)
    year = np.asarray(prep.data.items.year)
    H = {w: sp.histories(w) for w in ("cold_valid", "cold")}
    when = {w: sp.request_times(w) for w in H}
    zero = {w: np.asarray(Arm("zero-shot", ids, H[w], users_all, split=sp, prep=prep).score(everyone), np.float64)
            for w in H}
    first = np.full(sp.n_items, np.iinfo(np.int64).max)
    np.minimum.at(first, sp.cold_test.item, sp.cold_test.time)

    def ndcg(S, split, which):
        out = {"ndcg@10": []}
        evaluate(lambda us: S[us], split, which, n_neg=1, per_user_out=out, ranking_only=True)
        return np.asarray(out.get("users", []), np.int64), np.asarray(out["ndcg@10"])

    def curves(T, T_prior, which, split, items):
        """(users, family -> {choice: per-user nDCG@10}) over ``split``'s ``which`` set, candidates ``items``."""
        Zt, Zz = np.zeros_like(T), np.zeros_like(T)
        Zt[:, items], Zz[:, items] = zscore(T[:, items]), zscore(zero[which][:, items])
        users, alone = ndcg(T, split, which)
        if not len(users):
            return users, {f: {} for f in FAMILIES}
        req = split.request_times(which)  # the priors as of this set's own request times
        out = {"mix": {w: (ndcg((1 - w) * Zt + w * Zz, split, which)[1] if w else alone) for w in MIX_WEIGHTS}}
        rr = {h: release_recency(year, req, h) for h in RECENCY_HALF_LIVES}
        out["release-recency"] = {(f"h={h:g}y", s): (ndcg(with_prior(T, rr[h], items, s), split, which)[1] if s else alone)
                                  for h in RECENCY_HALF_LIVES for s in PRIOR_GRID}
        out["text-popularity"] = {("", s): (ndcg(with_prior(T, T_prior, items, s), split, which)[1] if s else alone)
                                  for s in PRIOR_GRID}
        return users, out

    # per teacher, once for both views: its scores, its text-popularity prior and the choices made on cold-validation
    fitted = []
    for t, M in zip(teachers, models):
        _, rec = M.modules()
        warm = sp.warm_items
        w_, b_, _ = fit_prior(M.emb[warm], prep.pop[warm])
        T_prior = M.emb @ w_ + b_
        S = {w: np.asarray(Scorer(M.conf, rec, M.emb, H[w], pop_rows=popularity_rows(rec, sp, when[w]))(everyone),
                           np.float64) for w in H}
        cv = curves(S["cold_valid"], T_prior, "cold_valid", sp, sp.cold_valid_items)[1]
        fitted.append((t, T_prior, S["cold"], {f: pick(cv[f], 0.0) for f in FAMILIES}))

    results = {}
    for drop in (0, 1):
        vsp, dropped = sp.without_top_items("cold", drop)
        top = dropped[0] if dropped else int(np.argmax(np.bincount(vsp.cold_test.item[vsp.cold_test.label == 1],
                                                                    minlength=sp.n_items)))
        # the evaluation sets (split, candidate items) and, for each, the set its choice is made on
        sets = {}
        cases = {"halves": [], "windows": []}
        for d in range(a.deals):
            halves = deal_halves(vsp.cold_items, d)
            for side, h in enumerate(halves):
                sets[("h", d, side)] = (cold_subset(vsp, h), h)
            cases["halves"] += [(("h", d, 0), ("h", d, 1)), (("h", d, 1), ("h", d, 0))]
        windows = time_windows(vsp.cold_items, first, a.windows)
        for k, (w, t0) in enumerate(windows):
            sets[("w", k)] = (cold_subset(vsp, w), w)
            if k:  # chosen on the previous window's items, from their events before this window's first item
                sets[("wc", k)] = (cold_subset(vsp, windows[k - 1][0], before=t0), windows[k - 1][0])
            cases["windows"].append((("w", k), ("wc", k) if k else None))  # None: cold-validation's choice
        acc = {c: {} for c in cases}  # scheme -> eval set -> {"users", arm: per-user sums over seeds}
        choices = []
        for t, T_prior, S_cold, before in fitted:
            cur = {sid: curves(S_cold, T_prior, "cold", split, items) for sid, (split, items) in sets.items()}
            for scheme, cs in cases.items():
                for ev, ch in cs:
                    users, c = cur[ev]
                    if not len(users):
                        continue
                    chosen = before if ch is None else {f: pick(cur[ch][1][f], before[f]) for f in FAMILIES}
                    vals = {"teachers alone": c["mix"][0.0]}
                    for f in FAMILIES:
                        vals[f"{f} before"] = c[f][before[f]]
                        vals[f"{f} {SCHEMES[scheme]}"] = c[f][chosen[f]]
                    slot = acc[scheme].setdefault(ev, {"users": users, **{k: np.zeros(len(users)) for k in vals}})
                    for k, v in vals.items():
                        slot[k] += v / len(teachers)
                    choices.append({"teacher": t, "scheme": scheme, "set": "-".join(map(str, ev)),
                                    **{f"{f} before": str(before[f]) for f in FAMILIES},
                                    **{f"{f} {SCHEMES[scheme]}": str(chosen[f]) for f in FAMILIES}})
        view = {"dropped": [prep.data.items.title[i] for i in dropped], "choices": choices, "schemes": {}}
        for scheme, slots in acc.items():
            arms = ["zero-shot", "teachers alone"] + [f"{f} {w}" for f in FAMILIES for w in ("before", SCHEMES[scheme])]
            sums, count, table = {k: np.zeros(sp.n_users) for k in arms}, np.zeros(sp.n_users), []
            for ev, slot in slots.items():
                split, items = sets[ev]
                slot["zero-shot"] = ndcg(zero["cold"], split, "cold")[1]
                count[slot["users"]] += 1
                for k in arms:
                    sums[k][slot["users"]] += slot[k]
                row = {"set": "-".join(map(str, ev)), "items": len(items), "users": len(slot["users"])}
                if scheme == "halves":
                    row["top film in it"] = "yes" if top in items and not dropped else "-"
                else:
                    fs = first[items]
                    row["first events"] = (f"{np.datetime64(int(fs.min()), 's').astype('datetime64[D]')} to "
                                           f"{np.datetime64(int(fs.max()), 's').astype('datetime64[D]')}")
                table.append({**row, **{k: float(slot[k].mean()) for k in arms}})
            has = count > 0
            view["schemes"][scheme] = {"arms": arms, "per_user": {k: v[has] / count[has] for k, v in sums.items()},
                                       "users": int(has.sum()), "sets": table}
        results[drop] = view

    out_rows, md_views = [], []
    for drop, r in results.items():
        vname = "all cold-test items" if not drop else f"without {', '.join(r['dropped'])}"
        for scheme, sc in r["schemes"].items():
            way = SCHEMES[scheme]
            pairs = [(f"{f} {way}", ref) for f in FAMILIES for ref in ("teachers alone", "zero-shot", f"{f} before")]
            pairs += [(f"{f} before", "teachers alone") for f in FAMILIES] + [("teachers alone", "zero-shot")]
            rows = []
            for b, ref in pairs:
                st = paired_stats(sc["per_user"][ref], sc["per_user"][b], n_boot=a.bootstrap)
                rows.append({"view": vname, "scheme": scheme, "arm": b, "vs": ref, "users": st["users"],
                             "reference": st["mean_a"], "arm nDCG@10": st["mean_b"],
                             "diff": f"{st['diff']:+.4f} ({100 * st['rel_diff']:+.1f}%)",
                             "95% CI": f"[{st['ci95'][0]:+.4f}, {st['ci95'][1]:+.4f}]", "p": st["p_permutation"],
                             "stats": st})
            adj = holm({str(i): x["p"] for i, x in enumerate(rows)})
            for i, x in enumerate(rows):
                x["p (Holm)"] = adj[str(i)]
            out_rows += rows
            means = {k: float(v.mean()) for k, v in sc["per_user"].items()}
            what = (f"{a.deals} random deals into two halves, each half's choice made on the other" if scheme == "halves"
                    else f"{a.windows} windows by first event, each window's choice made on the previous one's items "
                         "(their events before the window's first; the first window's on cold-validation)")
            md_views += [f"## {vname}: {scheme} ({sc['users']} users; {what})", "",
                         "Mean per-user nDCG@10 by arm: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()) + ".", "",
                         markdown_table(rows, ["arm", "vs", "users", "reference", "arm nDCG@10", "diff", "95% CI", "p",
                                               "p (Holm)"]), "",
                         "Per evaluation set (its users' mean nDCG@10, teachers averaged):", "",
                         markdown_table(sc["sets"], list(sc["sets"][0])), ""]
    res = {"machine": machine(), "config": a.config, "teachers": teachers, "deals": a.deals, "windows": a.windows,
           "grids": {"mix": list(MIX_WEIGHTS), "prior": list(PRIOR_GRID), "half_lives_years": list(RECENCY_HALF_LIVES)},
           "rows": out_rows,
           "sets": {str(d): {s: sc["sets"] for s, sc in r["schemes"].items()} for d, r in results.items()},
           "choices": {str(d): r["choices"] for d, r in results.items()},
           "command": "python benchmarks/cold_same_period.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = [f"# Cold items: choices made on new items of the test's own period ({a.config})", "",
          f"Reproduce: `{res['command']}`", "",
          f"The {len(sp.cold_items)} cold-test items ranked by the teachers alone, the zero-shot encoder alone, and the "
          f"teachers + a choice (`mix`: the zero-shot score's share w in {list(MIX_WEIGHTS)}; `release-recency`, "
          "`text-popularity`: the priors of `cold_prior.py`, their grids) made on the "
          f"{len(sp.cold_valid_items)} cold-validation items, first seen before the cold test (`before`: what the "
          "project does today), or within the cold-test period: `halves`, the items dealt at random into two halves, "
          "each ranked with the choice made on the other (`same period`: cross-fitted, no half scored with a choice it "
          "took part in); `windows`, the items cut by first event into consecutive windows, each ranked with the "
          "choice made on the previous window's items from their events before it (`previous window`: what a model "
          "re-calibrated as it goes could do). Every arm of a scheme ranks the same candidates for the same users. "
          "Per-user nDCG@10 averaged over the evaluation sets where the user has a held-out positive and over the "
          f"{len(teachers)} teacher seeds; paired bootstrap 95% CI over users, sign-flip permutation p, Holm over each "
          "table's rows.", "",
          *md_views,
          "The choices per teacher seed and evaluation set are in the JSON (`choices`).", "",
          machine_markdown(res["machine"]), ""]
    write_results(a.out, a.name or f"cold-same-period-{Path(cpath).stem}", res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
