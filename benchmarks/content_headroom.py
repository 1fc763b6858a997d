"""Where the language model's score adds to collaborative filtering, and where it does not.

    python benchmarks/content_headroom.py --config ml-100k-quick \\
        --teachers runs/seeds2/s0,runs/seeds2/s1,runs/seeds2/s2 --out benchmarks/results

Warm users (the upper bound of what content can add to the strongest tuned CF): the scores of the
``ease-recency`` baseline (tuned on validation as in ``genre eval baselines``) plus w x the trained
teacher's content score (its user vector . item embeddings, no CF), both z-scored per user over the
items; w chosen on validation nDCG@10 from ``WARM_GRID`` (w = 0 is the baseline itself), test scored
once with the chosen w, per teacher seed, and compared with the baseline per user (paired bootstrap
CI over users, sign-flip permutation p). If even this free blend gains nothing on test, content holds
no warm signal that CF lacks, whatever head learns the blend.

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

WARM_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
COLD_GRID = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


def zscore(s: np.ndarray) -> np.ndarray:
    """Per-row z-scores (scores on different scales become comparable before they are added)."""
    s = np.asarray(s, np.float64)
    return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)


def main(argv: list[str] | None = None) -> int:
    import torch

    from genre_edge.bench.report import markdown_table, write_results
    from genre_edge_export.ab import Arm, paired_stats
    from genre_edge_export.baselines import interaction_matrix, tune
    from genre_edge_export.evaluate import evaluate
    from genre_edge_export.model_folder import ModelDir
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.scoring import Scorer, popularity_rows
    from genre_edge_export.train_config import load_config, packaged_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="ml-100k-quick", help="training config (its data and split) of the teachers")
    ap.add_argument("--teachers", required=True, help="comma-separated teacher folders (training seeds)")
    ap.add_argument("--dir", dest="data_dir", default=None, help="data cache folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cpath = Path(a.config) if Path(a.config).is_file() else packaged_config(a.config)
    conf = load_config(cpath)
    prep = Prepared(conf, a.data_dir)
    sp = prep.split
    teachers = [t.strip() for t in a.teachers.split(",") if t.strip()]
    models = []
    for t in teachers:
        M = ModelDir(t)
        if list(M.items["ids"]) != list(prep.data.items.ids):
            ap.error(f"--teachers: {t} was trained on other items than --config {a.config}'s data set")
        models.append(M)
    base, params, _ = tune("ease-recency", sp, interaction_matrix(sp))

    # ---------------------------------------------------------------- warm users
    H = {w: sp.histories(w) for w in ("valid", "test", "cold_valid", "cold")}
    warm_rows, per_user = [], {}
    for t, M in zip(teachers, models):
        _, rec = M.modules()
        sc = {w: Scorer(M.conf, rec, M.emb, H[w], pop_rows=popularity_rows(rec, sp, sp.request_times(w)))
              for w in H}

        def blend(which, w, sc=sc):
            def f(users):
                out = zscore(base.score(users, H[which]))
                if w:
                    with torch.no_grad():
                        u = sc[which].user_vectors(users).numpy()
                    out = out + w * zscore(u @ sc[which].E.numpy().T)
                return out
            return f
        valid = {w: evaluate(blend("valid", w), sp, "valid", n_neg=1)["ndcg@10"] for w in WARM_GRID}
        chosen = max(WARM_GRID, key=lambda w: (valid[w], -w))  # ties: the smaller weight
        pa, pb = {"ndcg@10": []}, {"ndcg@10": []}
        ta = evaluate(blend("test", 0.0), sp, "test", n_neg=1, per_user_out=pa)["ndcg@10"]
        tb = evaluate(blend("test", chosen), sp, "test", n_neg=1, per_user_out=pb)["ndcg@10"]
        per_user[t] = (pa["ndcg@10"], pb["ndcg@10"])
        warm_rows.append({"teacher": t, "valid: baseline": valid[0.0], "valid: best blend": valid[chosen],
                          "chosen w": f"{chosen:g}", "test: baseline": ta, "test: blend": tb, "test diff": tb - ta,
                          "valid grid": {str(w): v for w, v in valid.items()}})
    a_mean = np.mean([per_user[t][0] for t in teachers], axis=0)
    b_mean = np.mean([per_user[t][1] for t in teachers], axis=0)
    warm_stats = paired_stats(a_mean, b_mean)

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
                  "cold-valid ndcg@10": f"{np.mean(cold[('cold_valid', al)]):.4f} +- {np.std(cold[('cold_valid', al)], ddof=1) if len(teachers) > 1 else 0:.4f}",
                  "cold-test ndcg@10": f"{np.mean(cold[('cold', al)]):.4f} +- {np.std(cold[('cold', al)], ddof=1) if len(teachers) > 1 else 0:.4f}",
                  "chosen on cold-valid": "yes" if al == choice else ""} for al in COLD_GRID]

    res = {"machine": machine(), "config": a.config, "teachers": teachers, "baseline": "ease-recency",
           "baseline_params": params, "warm": warm_rows, "warm_paired_seed_mean": warm_stats,
           "cold": {f"{w}:{al}": v for (w, al), v in cold.items()}, "cold_choice": choice,
           "command": "python benchmarks/content_headroom.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    s = warm_stats
    md = [f"# What content adds to tuned CF, and the cold trade-off ({a.config})", "",
          f"Reproduce: `{res['command']}`", "",
          "## Warm users: the tuned baseline + w x the teacher's content score (z-scored per user)", "",
          f"Baseline: `ease-recency` tuned on validation ({params}). w chosen on validation nDCG@10 from "
          f"{list(WARM_GRID)}; test scored once with the chosen w.", "",
          markdown_table([{k: v for k, v in r.items() if k != "valid grid"} for r in warm_rows],
                         ["teacher", "valid: baseline", "valid: best blend", "chosen w", "test: baseline",
                          "test: blend", "test diff"]), "",
          f"Blend (per-user nDCG@10 averaged over the {len(teachers)} seeds) minus baseline on test, {s['users']} users: "
          f"{s['diff']:+.4f} ({100 * s['rel_diff']:+.1f}%), 95% paired bootstrap CI [{s['ci95'][0]:+.4f}, "
          f"{s['ci95'][1]:+.4f}], sign-flip p {s['p_permutation']:.3f}, wins/losses/ties "
          f"{s['wins_b']}/{s['losses_b']}/{s['ties']}.", "",
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
