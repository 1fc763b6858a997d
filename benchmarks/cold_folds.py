"""New items over random item folds: the trained teacher against the untrained encoder, on the whole catalog.

    python benchmarks/cold_folds.py --config ml-100k-quick --folds 0-9 --work runs/cold-folds [--bundles] [--mix]

Why: the default split's new items are the 216 films first rated in the log's second half; one of them
(*Good Will Hunting*) holds 15% of their held-out positives and decides the cold comparison
(``cold_report.py``). Here the items are dealt at random into ``--cold-folds`` folds (``[split] cold_by =
"random"``); for each fold the config's teacher is trained without that fold's items (``genre train``; the next
fold is its cold validation, as the time split's cold-validation items are) and both arms rank the fold's items
for every user who rated one, from the same histories (``genre ab`` arms: the teacher folder and
``zero-shot``); with ``--bundles`` also the teacher distilled and exported as the main job ships it (int8);
with ``--mix`` also a second view: the last arm's score mixed with the zero-shot encoder's, the weight chosen on the
fold's cold validation (what shipping the untrained encoder next to the trained one would buy).
Every item is a new item once, so no single film decides the answer. Reported: each fold
(paired bootstrap CI over its users, sign-flip p, Holm over the folds), the mean over folds, and the pooled
comparison (each user's metric averaged over the folds they were evaluated in, then paired over users).
Folders that already hold a report are reused, so an interrupted run continues. Nothing here is tuned on the
cold test: the teacher's choices are made on warm validation and its cold-validation fold. About 2.5 minutes
per fold here (2 cores) with the quick preset, about 4 more with ``--bundles`` (an hour for 10 folds).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402
from teacher_args import trained, zscore  # noqa: E402

METRICS = ("ndcg@10", "recall@20", "hit@10")
# --mix: the zero-shot score's share in a mix with the trained one (0 = trained alone), chosen on cold validation
MIX_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def parse_folds(text: str, n: int) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or a mix -> sorted fold numbers, each in [0, n)."""
    out = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--folds: {part!r} is not a fold number or a range like 0-9") from None
        if not 0 <= a <= b < n:
            raise ValueError(f"--folds: {part!r} is outside 0-{n - 1} (--cold-folds {n})")
        out.update(range(a, b + 1))
    if not out:
        raise ValueError("--folds: no fold given")
    return sorted(out)


def fold_config(base: str, work: Path, fold: int, n_folds: int, seed: int) -> Path:
    """The config ``base`` (packaged name or TOML path) with ``[split] cold_by = "random"`` and this fold, written
    to ``work`` and validated before any training starts."""
    from genre_edge.config import dumps_toml, read_toml
    from genre_edge_export.train_config import load_config, packaged_config

    src = Path(base) if Path(base).suffix == ".toml" else packaged_config(base)
    data = read_toml(src)
    split = data.setdefault("split", {})
    if split.get("kind", "cold_item") != "cold_item":
        raise ValueError(f"{src}: [split] kind is {split['kind']!r}; random item folds need kind = \"cold_item\"")
    split.update(kind="cold_item", cold_by="random", cold_folds=n_folds, cold_fold=fold, cold_seed=seed)
    data["name"] = f"{data.get('name', src.stem)}-cold-fold{fold}of{n_folds}"
    path = work / f"{data['name']}.toml"
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(f"# {src.name} with its new items a random fold of the catalog (benchmarks/cold_folds.py)\n"
                   + dumps_toml(data))
    tmp.replace(path)
    load_config(path)
    return path


def pooled(per_fold: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per user (over every user evaluated in any fold): the mean of ``metric`` over the folds they were evaluated
    in, for arm A and arm B. A user is the unit of the pooled comparison, as in every other paired test here."""
    users = np.unique(np.concatenate([p["A"]["users"] for p in per_fold]))
    pos = {u: i for i, u in enumerate(users)}
    sums = np.zeros((2, len(users)))
    count = np.zeros(len(users))
    for p in per_fold:
        idx = np.array([pos[u] for u in p["A"]["users"]])
        sums[0, idx] += p["A"][metric]
        sums[1, idx] += p["B"][metric]
        count[idx] += 1
    return sums[0] / count, sums[1] / count


def main(argv: list[str] | None = None) -> int:
    from genre_edge.bench.report import markdown_table, write_report
    from genre_edge_export.ab import holm, paired_stats, replay

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="ml-100k-quick", help="training config (packaged name or TOML path)")
    ap.add_argument("--cold-folds", type=int, default=10, help="the items are dealt into this many folds")
    ap.add_argument("--folds", default="0-9", help="which folds to run: 0-9, or 0,2,4")
    ap.add_argument("--fold-seed", type=int, default=0, help="seed of the items' deal into folds")
    ap.add_argument("--seed", type=int, default=0, help="training seed of every fold's teacher")
    ap.add_argument("--drops", default="0,1", help="per fold, also without its top N held-out items (by positives)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--bundles", action="store_true",
                    help="also distil and export each fold's teacher (as the main job does) and compare the bundle")
    ap.add_argument("--distill-epochs", type=int, default=4, help="with --bundles (the quick preset's main job: 4)")
    ap.add_argument("--distill-layers", default=None, help="with --bundles: teacher layers the student keeps, e.g. "
                    "0,2,5 (default: the distillation default, as the main job)")
    ap.add_argument("--mix", action="store_true",
                    help="also a second view: the last arm's score mixed with the zero-shot encoder's, the weight "
                    "chosen on each fold's cold validation, against that arm alone on the fold's new items")
    ap.add_argument("--work", default="runs/cold-folds", help="configs and trained teachers go here")
    ap.add_argument("--dir", dest="data_dir", default=None, help="data cache folder")
    ap.add_argument("--name", default=None, help="report name (default cold-folds-<config>)")
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args(argv)
    if a.cold_folds < 3:
        ap.error(f"--cold-folds must be at least 3 (a test fold, a validation fold, training), not {a.cold_folds}")
    try:
        folds = parse_folds(a.folds, a.cold_folds)
        drops = sorted({int(x) for x in a.drops.split(",") if x.strip()})
    except ValueError as exc:
        ap.error(str(exc))
    if not drops or min(drops) < 0:
        ap.error(f"--drops: numbers >= 0, not {a.drops!r}")
    work = Path(a.work)
    arm_names = ["teacher"] + (["int8 bundle"] if a.bundles else [])
    rows, raw, per = [], [], {(arm, d): [] for arm in arm_names for d in drops}
    cis = []  # each row's nDCG@10 CI as numbers (the row shows it formatted)
    mix_rows, mix_per = [], []
    for f in folds:
        cpath = fold_config(a.config, work, f, a.cold_folds, a.fold_seed)
        folder = work / f"fold{f}"
        rep = trained(cpath, folder, a.seed, a.data_dir)
        specs = {"teacher": folder}
        if a.bundles:
            specs["int8 bundle"] = bundled(folder, work / f"fold{f}-student", work / f"fold{f}-bundle",
                                           a.distill_epochs, a.distill_layers, a.data_dir)
        arms: dict = {}  # zero-shot embeds the catalog once per fold
        if a.mix:
            label = list(specs)[-1]
            row, pu = mixed_view(cpath, specs[label], a.data_dir, a.bootstrap)
            mix_rows.append({"fold": str(f), "arm": label, **row})
            mix_per.append(pu)
        top = top_item(cpath, a.data_dir)
        for arm, spec in specs.items():
            for d in drops:
                pu: dict = {}
                r = replay("zero-shot", str(spec), str(cpath), a.data_dir, which="cold", metrics=METRICS,
                           n_boot=a.bootstrap, drop_top_items=d, arms=arms, per_user=pu)
                per[(arm, d)].append(pu)
                raw.append({"fold": f, "arm": arm, "drop": d,
                            "teacher_report": {k: rep.get(k) for k in ("teacher", "train_seconds")}, **r})
                c = r["comparison"]["ndcg@10"]
                s = r["split"]
                cis.append(c["ci95"])
                rows.append({
                    "fold": str(f), "arm": arm, "drop": d,
                    "without": ", ".join(x["title"] for x in r["dropped_items"]) or "-",
                    "cold items": s["cold_items"], "positives": s["cold_test"]["positives"], "users": c["users"],
                    "zero-shot": c["mean_a"], "arm nDCG@10": c["mean_b"], "diff": c["diff"],
                    "arm / zero-shot": c["mean_b"] / c["mean_a"] if c["mean_a"] else float("nan"),
                    "ci95": f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", "p": c["p_permutation"],
                    "wins/losses/ties": f"{c['wins_b']} / {c['losses_b']} / {c['ties']}",
                    "top item (share of positives)": "" if d else f"{top[0]} ({100 * top[1]:.1f}%)",
                })
    summary = []
    for arm in arm_names:
        for d in drops:  # Holm over the folds of one (arm, drop): one family of tests of one question
            idx = [i for i, r in enumerate(rows) if (r["arm"], r["drop"]) == (arm, d)]
            adj = holm({str(i): rows[i]["p"] for i in idx})
            for i in idx:
                rows[i]["p (Holm, folds)"] = adj[str(i)]
            fold_rows = [rows[i] for i in idx]
            lows, highs = [cis[i][0] for i in idx], [cis[i][1] for i in idx]
            za, tb = pooled(per[(arm, d)], "ndcg@10")
            c = paired_stats(za, tb, n_boot=a.bootstrap)
            summary.append({
                "arm": arm, "over": f"{len(fold_rows)} folds" + (f", each without its top {d} item(s)" if d else ""),
                "users": c["users"],
                "zero-shot (mean of folds)": float(np.mean([r["zero-shot"] for r in fold_rows])),
                "arm (mean of folds)": float(np.mean([r["arm nDCG@10"] for r in fold_rows])),
                "folds arm ahead": f"{sum(r['diff'] > 0 for r in fold_rows)} of {len(fold_rows)}",
                "folds CI above 0 / below 0": f"{sum(lo > 0 for lo in lows)} / {sum(hi < 0 for hi in highs)}",
                "pooled zero-shot": c["mean_a"], "pooled arm": c["mean_b"], "pooled diff": c["diff"],
                "pooled ci95": f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", "pooled p": c["p_permutation"],
            })
    mix_md = []
    if a.mix:
        za, tb = pooled(mix_per, "ndcg@10")
        c = paired_stats(za, tb, n_boot=a.bootstrap)
        mix_md = ["## A second view: the trained score mixed with the untrained encoder's", "",
                  f"Per fold, the {mix_rows[0]['arm']}'s score and the zero-shot encoder's, each standardised per user "
                  "over the candidate items, mixed as `(1 - w) * trained + w * zero-shot` with w from "
                  f"{', '.join(f'{w:g}' for w in MIX_WEIGHTS)} chosen on the fold's cold validation (ties: the "
                  "smaller w), then scored once on the fold's new items against the arm alone (w = 0). Pooled over "
                  f"{c['users']} users: alone {c['mean_a']:.4f}, mixed {c['mean_b']:.4f}, diff {c['diff']:+.4f} "
                  f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}], p {c['p_permutation']:.4f}; w chosen "
                  f"{', '.join(str(r['w chosen']) for r in mix_rows)}.", "",
                  markdown_table(mix_rows, list(mix_rows[0])), ""]
    stem = Path(a.config).stem
    name = a.name or f"cold-folds-{stem}"
    cmd = (f"python benchmarks/cold_folds.py --config {a.config} --cold-folds {a.cold_folds} --folds {a.folds} "
           f"--work {a.work}" + (" --bundles" if a.bundles else "") + (" --mix" if a.mix else ""))
    md = [f"# New items over random item folds: trained vs the untrained encoder ({stem})", "",
          f"The catalog's items dealt at random into {a.cold_folds} folds (seed {a.fold_seed}); per fold the `{stem}` "
          f"teacher (training seed {a.seed}) is trained without the fold's items and without the next fold's (its "
          "cold validation), then it"
          + (f" (and its shipped form: distilled {a.distill_epochs} epochs, int8, `genre export` with the gates "
             "off: measured here, not gated)" if a.bundles else "")
          + " and the zero-shot encoder rank the fold's items for every user who rated one (`[split] cold_by = "
          "\"random\"`). nDCG@10 per user, paired; `ci95` paired bootstrap over users, `p` sign-flip permutation, "
          "Holm over the folds of each arm and drop level. The pooled rows average each user's metric over the folds "
          "they were evaluated in and pair over users.", "", f"Command: `{cmd}`", "", "## Over the folds", "",
          markdown_table(summary, list(summary[0])), "", "## Per fold", "",
          markdown_table(rows, [k for k in rows[0] if k != "drop"] + ["p (Holm, folds)"]), "", *mix_md,
          machine_markdown(machine()), ""]
    write_report(Path(a.out), name, {"config": a.config, "cold_folds": a.cold_folds, "fold_seed": a.fold_seed,
                                     "seed": a.seed, "command": cmd, "summary": summary, "rows": rows,
                                     "mix": mix_rows,
                                     "replays": raw, "machine": machine()}, "\n".join(md))
    print("\n".join(md[:-2]))
    return 0


def bundled(teacher: Path, student: Path, bundle: Path, epochs: int, layers: str | None, data_dir: str | None) -> Path:
    """The teacher distilled and exported as the README's main job does (``genre distill``, ``genre export`` for
    the demo's profiles), reused when ``bundle`` already holds a manifest. The gates are off: the comparison
    with zero-shot is the measurement, and a refused fold would end the run."""
    from genre_edge_export.quickstart import demo_profiles

    if not (bundle / "manifest.json").is_file():
        genre = str(Path(sys.executable).parent / "genre")
        dd = ["--dir", data_dir] if data_dir else []
        subprocess.run([genre, "distill", "--teacher", str(teacher), "--out", str(student), "--epochs", str(epochs),
                        *(["--layers", layers] if layers else []), *dd], check=True)
        subprocess.run([genre, "export", "--model", str(student), "--teacher", str(teacher), "--out", str(bundle),
                        *[x for p in demo_profiles() for x in ("--profile", p)], "--min-kept", "0",
                        "--min-cold-kept", "0", "--min-request-kept", "0", *dd], check=True)
    return bundle


def mixed_view(config: Path, spec: Path, data_dir: str | None, n_boot: int) -> tuple[dict, dict]:
    """(row, per-user nDCG@10 of arm alone (A) and mixed (B) on the cold test) for one fold: ``spec``'s score and
    the zero-shot encoder's, standardised per user over the view's candidate items, mixed with the zero-shot
    weight of :data:`MIX_WEIGHTS` that is best on the cold-validation items; the cold test is read once."""
    from genre_edge_export.ab import Arm, paired_stats
    from genre_edge_export.evaluate import evaluate
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.train_config import load_config

    prep = Prepared(load_config(config), data_dir)
    sp, ids, users = prep.split, list(prep.data.items.ids), list(prep.data.users)

    def standardised(which: str) -> tuple[np.ndarray, np.ndarray]:
        hist, when = sp.histories(which), sp.request_times(which)
        cand = sp.cold_valid_items if which == "cold_valid" else sp.cold_items
        every = np.arange(sp.n_users)
        out = []
        for arm in (str(spec), "zero-shot"):
            S = np.asarray(Arm(arm, ids, hist, users, sp, prep, when=when).score(every), np.float64)
            Z = np.zeros_like(S)
            Z[:, cand] = zscore(S[:, cand])
            out.append(Z)
        return out[0], out[1]

    def ndcg(T, Z, w, which, per=None):
        return evaluate(lambda us: (1 - w) * T[us] + w * Z[us], sp, which, per_user_out=per).get("ndcg@10", 0.0)

    T, Z = standardised("cold_valid")
    valid = {w: ndcg(T, Z, w, "cold_valid") for w in MIX_WEIGHTS}
    best = max(MIX_WEIGHTS, key=lambda w: (valid[w], -w))
    T, Z = standardised("cold")
    alone, mixed = {}, {}
    ndcg(T, Z, 0.0, "cold", alone)
    ndcg(T, Z, best, "cold", mixed)
    c = paired_stats(alone["ndcg@10"], mixed["ndcg@10"], n_boot=n_boot)
    row = {"w chosen": best, "valid alone": valid[0.0], "valid mixed": valid[best], "valid zero-shot": valid[1.0],
           "users": c["users"], "test alone": c["mean_a"], "test mixed": c["mean_b"], "diff": c["diff"],
           "ci95": f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", "p": c["p_permutation"]}
    return row, {"A": alone, "B": mixed}


def top_item(config: Path, data_dir: str | None) -> tuple[str, float]:
    """(title, share of the cold-test positives) of the fold's new item with the most held-out positives: how far
    one film can decide the fold (on the default time split, *Good Will Hunting* holds 15%)."""
    from genre_edge_export.prepare import config_dataset
    from genre_edge_export.split import make_split
    from genre_edge_export.train_config import load_config

    conf = load_config(config)
    data = config_dataset(conf, data_dir)
    held = make_split(data, conf.split).cold_test
    counts = np.bincount(held.item[held.label == 1], minlength=data.n_items)
    i = int(np.argmax(counts))
    return data.items.title[i], float(counts[i] / max(counts.sum(), 1))


if __name__ == "__main__":
    sys.exit(main())
