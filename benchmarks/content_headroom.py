"""Where the language model's score adds to collaborative filtering, and where it does not.

    python benchmarks/content_headroom.py --config ml-100k-quick \\
        --teachers runs/seeds2/s0,runs/seeds2/s1,runs/seeds2/s2 --out benchmarks/results

Warm users (the upper bound of what content can add to the strongest tuned CF): the scores of the
``ease-recency`` baseline (tuned on validation as in ``genre eval baselines``) plus the trained
teacher's content score (its user vector . item embeddings, no CF), both z-scored per user over the
items, in the four ``WARM_FORMS``: one weight, one per history-length third, a weight gated by the
item's training count, and a second weight for the untrained encoder's score. Each form's weights are
chosen on validation nDCG@10 (weight 0 is the baseline itself), test is scored once with the choice,
per teacher seed, and compared with the baseline per user (paired bootstrap CI over users, sign-flip
permutation p, Holm over the forms). If even these free blends gain nothing on test, content holds no
warm signal that CF lacks, whatever head learns the blend.

Cold items (never trained on): (1 - a) x z(trained teacher) + a x z(zero-shot encoder) over the cold
candidates, for every a in ``COLD_GRID``, on cold-validation and on cold-test. Test is shown for every a
for the record (a curve, not a choice); the a that validation would choose is marked. Where the two
sets want opposite ends, no a chosen on validation reaches the zero-shot level on cold-test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402
from teacher_args import add_teacher_args, load_teachers, mean_sd, zscore  # noqa: E402

WARM_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
COLD_GRID = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


# How the teacher's content score joins the baseline's (each form's weights chosen on validation):
# one weight; one weight per third of the users by history length (content for short histories);
# a weight gated by the item's training count, w / (1 + count / k) (content for rarely rated items);
# one weight each for the teacher's score and the untrained encoder's (a second, pretrained view).
WARM_FORMS = ("w", "w by history length", "w x rarity gate", "w + zero-shot view")
GATE_W = (0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
GATE_K = (5, 20, 50, 200)


def describe(chosen) -> str:
    """A blend's chosen weights as the report shows them."""
    if isinstance(chosen, dict):
        e = chosen["history_length_edges"]
        return f"{chosen['weights']} (history length < {e[0]:g}, < {e[1]:g}, more)"
    return f"{chosen:g}" if isinstance(chosen, float) else str(chosen)


def choose_blend(form, B, C, Z, history_len, item_count, valid_users, per_user):
    """(the weights chosen, their validation nDCG@10, blend(which) -> score matrix) for one of ``WARM_FORMS``
    (weights: w; (w, k) for the gate; (w, zero-shot w); {"weights": per third, "history_length_edges"}):
    every weight searched on validation nDCG@10 (ties: the smaller weight, i.e. closer to the baseline).
    ``B``/``C``/``Z``: baseline, teacher content and zero-shot content scores per split (z-scored);
    ``history_len``: per split, every user's history length; ``valid_users``: the users evaluate() scores on
    validation, in its order; ``per_user(S, which)``: per-user nDCG@10 of score matrix ``S``."""
    def best(options, make):
        valid = {o: per_user(make(o, "valid"), "valid") for o in options}
        o = max(options, key=lambda o: (valid[o].mean(), -np.sum(o)))
        return o, float(valid[o].mean()), lambda which: make(o, which)

    if form == "w":
        return best(WARM_GRID, lambda w, which: B[which] + w * C[which])
    if form == "w + zero-shot view":
        return best([(w, z) for w in WARM_GRID for z in WARM_GRID],
                    lambda o, which: B[which] + o[0] * C[which] + o[1] * Z[which])
    if form == "w x rarity gate":
        def make(o, which):
            return B[which] + o[0] / (1.0 + item_count[None, :] / o[1]) * C[which]
        return best([(0.0, 1.0)] + [(w, k) for w in GATE_W for k in GATE_K], make)
    if form == "w by history length":
        # buckets: thirds of the validation users by history length; each bucket's weight is chosen
        # on its own users (per-user metrics add up, so the buckets' choices are independent)
        edges = np.quantile(history_len["valid"][valid_users], [1 / 3, 2 / 3])
        bucket = {w: np.digitize(history_len[w], edges) for w in ("valid", "test")}
        valid = {w: per_user(B["valid"] + w * C["valid"], "valid") for w in WARM_GRID}
        ws = [max(WARM_GRID, key=lambda w: (valid[w][bucket["valid"][valid_users] == b].mean(), -w)) for b in range(3)]

        def make(which):
            return B[which] + np.asarray(ws)[bucket[which]][:, None] * C[which]
        return ({"weights": ws, "history_length_edges": [float(e) for e in edges]},
                float(per_user(make("valid"), "valid").mean()), make)
    raise ValueError(f"unknown blend form {form!r}; valid: {', '.join(WARM_FORMS)}")


def main(argv: list[str] | None = None) -> int:
    import torch

    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge_export.ab import Arm, holm, paired_stats
    from genre_edge_export.baselines import interaction_matrix, tune
    from genre_edge_export.evaluate import evaluate
    from genre_edge_export.scoring import Scorer, popularity_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_teacher_args(ap)
    a = ap.parse_args(argv)
    cpath, prep, teachers, models = load_teachers(ap, a)
    sp = prep.split
    base, params, _ = tune("ease-recency", sp, interaction_matrix(sp))

    # ---------------------------------------------------------------- warm users
    # Score matrices once per split (all users x all items; evaluate() reads its users' rows): the
    # baseline, the zero-shot encoder's content score, each teacher's content score, all z-scored.
    H = {w: sp.histories(w) for w in ("valid", "test", "cold_valid", "cold")}
    everyone = np.arange(sp.n_users)
    B = {w: zscore(base.score(everyone, H[w])) for w in ("valid", "test")}
    Z = {w: zscore(Arm("zero-shot", list(prep.data.items.ids), H[w], list(prep.data.users), split=sp,
                       prep=prep).score(everyone)) for w in ("valid", "test")}
    history_len = {w: np.array([len(h) for h in H[w]]) for w in ("valid", "test")}
    valid_users = np.flatnonzero([len(x) > 0 for x in sp.truth("valid")])  # evaluate()'s users, in order
    item_count = np.bincount(np.concatenate(sp.train_histories()), minlength=sp.n_items)

    def per_user(S, which):
        out = {"ndcg@10": []}
        evaluate(lambda us: S[us], sp, which, n_neg=1, per_user_out=out, ranking_only=True)
        return np.asarray(out["ndcg@10"])

    base_valid, base_test = per_user(B["valid"], "valid"), per_user(B["test"], "test")
    warm_rows, per_seed = [], {f: [] for f in WARM_FORMS}
    for t, M in zip(teachers, models):
        _, rec = M.modules()
        C = {}
        for w in ("valid", "test"):
            sc = Scorer(M.conf, rec, M.emb, H[w], pop_rows=popularity_rows(rec, sp, sp.request_times(w)))
            with torch.no_grad():
                C[w] = zscore(sc.user_vectors(everyone).numpy() @ sc.E.numpy().T)
        for form in WARM_FORMS:
            chosen, valid_best, blend = choose_blend(form, B, C, Z, history_len, item_count, valid_users, per_user)
            tb = per_user(blend("test"), "test")
            per_seed[form].append(tb)
            warm_rows.append({"blend": form, "teacher": t, "valid: baseline": float(base_valid.mean()),
                              "valid: best blend": valid_best, "chosen": describe(chosen), "chosen_weights": chosen,
                              "test: baseline": float(base_test.mean()), "test: blend": float(tb.mean()),
                              "test diff": float(tb.mean() - base_test.mean())})
    warm_stats = {f: paired_stats(base_test, np.mean(per_seed[f], axis=0)) for f in WARM_FORMS}
    for f, p_adj in holm({f: warm_stats[f]["p_permutation"] for f in WARM_FORMS}).items():
        warm_stats[f]["p_holm"] = p_adj
    warm_summary = [{"blend": f, "test: baseline": s["mean_a"], "test: blend (seed mean)": s["mean_b"],
                     "diff": f"{s['diff']:+.4f} ({100 * s['rel_diff']:+.1f}%)",
                     "95% CI": f"[{s['ci95'][0]:+.4f}, {s['ci95'][1]:+.4f}]", "p": s["p_permutation"],
                     "p (Holm)": s["p_holm"], "wins/losses/ties": f"{s['wins_b']}/{s['losses_b']}/{s['ties']}"}
                    for f, s in warm_stats.items()]

    # ---------------------------------------------------------------- cold items
    zero = {w: Arm("zero-shot", list(prep.data.items.ids), H[w], list(prep.data.users), split=sp, prep=prep).score
            for w in ("cold_valid", "cold")}
    cold_mask = np.zeros(sp.n_items, bool)
    cold_mask[sp.cold_items] = True
    cold_mask[sp.cold_valid_items] = True
    cold = {}
    for t, M in zip(teachers, models):
        _, rec = M.modules()
        sc = {w: Scorer(M.conf, rec, M.emb, H[w], pop_rows=popularity_rows(rec, sp, sp.request_times(w)))
              for w in ("cold_valid", "cold")}
        for which in ("cold_valid", "cold"):
            for al in COLD_GRID:
                def f(users, which=which, al=al, sc=sc):
                    out = np.full((len(users), sp.n_items), -1e9)  # only cold candidates are ranked there
                    out[:, cold_mask] = ((1 - al) * zscore(sc[which](users)[:, cold_mask])
                                         + al * zscore(zero[which](users)[:, cold_mask]))
                    return out
                cold.setdefault((which, al), []).append(evaluate(f, sp, which, n_neg=1)["ndcg@10"])
    choice = max(COLD_GRID, key=lambda al: (np.mean(cold[("cold_valid", al)]), -al))
    cold_rows = [{"zero-shot share a": f"{al:g}",
                  "cold-valid ndcg@10": mean_sd(cold[("cold_valid", al)]), "cold-test ndcg@10": mean_sd(cold[("cold", al)]),
                  "chosen on cold-valid": "yes" if al == choice else ""} for al in COLD_GRID]

    res = {"machine": machine(), "config": a.config, "teachers": teachers, "baseline": "ease-recency",
           "baseline_params": params, "warm": warm_rows, "warm_paired_seed_mean": warm_stats,
           "cold": {f"{w}:{al}": v for (w, al), v in cold.items()}, "cold_choice": choice,
           "command": "python benchmarks/content_headroom.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = [f"# What content adds to tuned CF, and the cold trade-off ({a.config})", "",
          f"Reproduce: `{res['command']}`", "",
          "## Warm users: the tuned baseline + the teacher's content score (z-scored per user)", "",
          f"Baseline: `ease-recency` tuned on validation ({params}). Four ways to add the content score, each one's "
          f"weights chosen on validation nDCG@10 (ties: the smaller weight), test scored once with the choice: "
          f"`w` (one weight from {list(WARM_GRID)}); `w by history length` (one per third of the users by history "
          f"length); `w x rarity gate` (w / (1 + item count / k), w in {list(GATE_W)}, k in {list(GATE_K)}: content "
          f"for rarely rated items); `w + zero-shot view` (a second weight for the untrained encoder's score).", "",
          f"Blend (per-user nDCG@10 averaged over the {len(teachers)} seeds) minus baseline on test, "
          f"{warm_stats['w']['users']} users; p: sign-flip permutation, Holm-adjusted over the {len(WARM_FORMS)} forms:", "",
          markdown_table(warm_summary, list(warm_summary[0])), "",
          "Per teacher seed:", "",
          markdown_table(warm_rows, ["blend", "teacher", "valid: baseline", "valid: best blend", "chosen",
                                     "test: baseline", "test: blend", "test diff"]), "",
          "## Cold items: (1 - a) x trained teacher + a x zero-shot encoder (z-scored over cold candidates)", "",
          f"Mean +- sd over the {len(teachers)} teachers. Test shown for every a, for the record; validation chooses "
          f"a = {choice}.", "",
          markdown_table(cold_rows, ["zero-shot share a", "cold-valid ndcg@10", "cold-test ndcg@10",
                                     "chosen on cold-valid"]), "",
          machine_markdown(res["machine"]), ""]
    write_results(a.out, a.name or f"content-headroom-{Path(cpath).stem}", res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
