"""Cold items, robustly: the untrained encoder vs the trained teachers and the shipped int8 bundle.

    python benchmarks/cold_report.py --config ml-100k-quick --bundle runs/quickstart/bundle \\
        --teachers runs/base/teacher,runs/seeds/s1,runs/seeds/s2 --out benchmarks/results

For the cold-test and cold-validation items (never trained on), each arm is compared with the
zero-shot encoder (`genre ab` arm ``zero-shot``) per user: paired bootstrap CI, sign-flip permutation
p-value. Then the same comparison without the 1 and the 3 held-out items that have the most
positives (``Split.without_top_items``): a cold set of a few hundred items can be dominated by one
film, and a comparison that flips when it is removed is a statement about that film, not about the
models. With ``--bundle-teacher`` (the teacher the bundle was distilled from), also the bundle against
that teacher: what distillation and int8 keep on new items (one seed's bundle against the mean of
several seeds would mix seed spread into it). Nothing here is tuned: the arms are what training and
export produced.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402

METRICS = ("ndcg@10", "recall@20", "hit@10")


def main(argv: list[str] | None = None) -> int:
    from genre_edge.bench.report import markdown_table, write_report
    from genre_edge_export.ab import holm, replay
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.train_config import load_config, packaged_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="ml-100k-quick", help="training config (its split) of the bundle and teachers")
    ap.add_argument("--bundle", required=True, help="the shipped bundle folder")
    ap.add_argument("--teachers", required=True, help="comma-separated teacher folders (training seeds)")
    ap.add_argument("--bundle-teacher", default=None,
                    help="the teacher folder the bundle was distilled from: also compare the bundle with it")
    ap.add_argument("--drops", default="0,1,3", help="numbers of top held-out items to take out")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--dir", dest="data_dir", default=None, help="data cache folder")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    drops = [int(x) for x in a.drops.split(",")]
    arms = {}  # built once (the encoder embeds the catalog once), scored at every drop level
    rows, raw = [], []
    # a split without cold-validation items (cold_valid_quantile = 0, or a small data set) reports cold test only
    cpath = a.config if Path(a.config).suffix == ".toml" else packaged_config(a.config)
    sp = Prepared(load_config(cpath), a.data_dir).split
    kinds = [w for w in ("cold", "cold_valid") if (sp.held_out(w).label == 1).any()]
    if not kinds:
        ap.error(f"--config {a.config}: its split holds no cold items (split.kind = \"cold_item\" makes them)")
    n_seeds = len([t for t in a.teachers.split(",") if t.strip()])
    # (reference name, its arm, arm name, its spec): both arms against zero-shot, the bundle against its teacher
    pairs = [("zero-shot", "zero-shot", f"teachers ({n_seeds} seeds)", a.teachers),
             ("zero-shot", "zero-shot", "shipped int8 bundle", a.bundle)]
    if a.bundle_teacher:
        pairs.append(("its teacher", a.bundle_teacher, "shipped int8 bundle", a.bundle))
    for which in kinds:
        for drop in drops:
            for ref, ref_spec, label, spec in pairs:
                r = replay(ref_spec, spec, a.config, a.data_dir, which=which, metrics=METRICS, n_boot=a.bootstrap,
                           drop_top_items=drop, arms=arms)
                raw.append(r)
                c = r["comparison"]["ndcg@10"]
                seeds = r["arms"]["B"].get("seeds", {}).get("ndcg@10")
                rows.append({
                    "items": "cold test" if which == "cold" else "cold validation",
                    "without": ", ".join(d["title"] for d in r["dropped_items"]) or "-",
                    "users": c["users"], "arm": label, "vs": ref, "reference": c["mean_a"],
                    "arm ndcg@10": (f"{seeds['mean']:.4f} +- {seeds['sd']:.4f}" if seeds else f"{c['mean_b']:.4f}"),
                    "diff": c["diff"], "kept": c["mean_b"] / c["mean_a"] if c["mean_a"] else float("nan"),
                    "ci95": f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]",
                    "p": c["p_permutation"], "wins/losses/ties": f"{c['wins_b']} / {c['losses_b']} / {c['ties']}",
                })
    adj = holm({str(i): r["p"] for i, r in enumerate(rows)})  # every row is one test of the same question
    for i, r in enumerate(rows):
        r["p (Holm, all rows)"] = adj[str(i)]
    cols = ["items", "without", "users", "arm", "vs", "reference", "arm ndcg@10", "diff", "kept", "ci95", "p",
            "p (Holm, all rows)", "wins/losses/ties"]
    m = machine()
    md = "\n".join([
        f"# Cold items: zero-shot encoder vs trained teachers and the shipped bundle, the bundle vs its teacher ({a.config})", "",
        "Reproduce: `python benchmarks/cold_report.py --config " + a.config + f" --bundle {a.bundle} --teachers "
        f"{a.teachers}" + (f" --bundle-teacher {a.bundle_teacher}" if a.bundle_teacher else "")
        + "` (a few minutes; the teachers and the bundle are `make demo` and `genre train --seed` outputs).", "",
        "nDCG@10 over the cold items only (never trained on), per user, arm minus reference (`vs`: the zero-shot "
        "encoder, or the teacher the bundle was distilled from; `kept` = arm / reference): paired bootstrap 95% CI "
        "and sign-flip permutation p; Holm-adjusted over all rows. `without`: the held-out items with the most "
        "positives taken out of candidates and truth for every arm (a robustness check, not a tuned choice).", "",
        markdown_table(rows, cols),
        machine_markdown(m), ""])
    write_report(a.out, f"cold-{Path(a.config).stem}", {"rows": rows, "replays": raw, "machine": m}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
