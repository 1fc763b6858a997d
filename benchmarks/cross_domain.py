"""Cross-domain transfer on ml-100k genre groups: adapt with 0 / 100 / 1,000 / all target interactions.

Source domain: Drama / Comedy / Romance items (none of the target genres). Target domain: Sci-Fi /
Action / Thriller / Horror items. For each budget of target training positives, two content
models (no CF part) are trained and scored on the target's held-out test users:

* target alone: from the pretrained encoder (``export/configs/ml-100k-domain-target.toml`` without
  ``init_from``); with 0 interactions that is the untrained encoder (zero-shot);
* transfer: from the source model (``init_from``), user model and head first (``freeze_epochs``);
  with 0 interactions the source model is used as it is;
* multi-task: source (all its positives) and target (the budget) trained together in one run
  (``export/configs/ml-100k-multidomain.toml``): shared item encoder, a user model and head per
  domain. Not run at 0 (the target's own parts would have nothing to learn from).

Users' histories are model input in full at test time; the budget limits what is *learned*.

    python benchmarks/cross_domain.py --work runs/domain
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from genre_edge.bench.machine import machine, machine_markdown  # noqa: E402

log = logging.getLogger("cross_domain")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/domain", help="where the models are written")
    ap.add_argument("--budgets", default="0,100,1000,all")
    ap.add_argument("--source-config", default="ml-100k-domain-source", help="packaged name or TOML path")
    ap.add_argument("--target-config", default="ml-100k-domain-target", help="packaged name or TOML path")
    ap.add_argument("--multi-config", default="ml-100k-multidomain",
                    help="packaged name or TOML path of the multi-task run (its 2nd domain is the target); "
                         "'' = no multi-task arm")
    ap.add_argument("--trainable-layers", type=int, default=None,
                    help="override encoder.trainable_layers in all three configs (default: as they say)")
    ap.add_argument("--dir", dest="data_dir", default=os.environ.get("GENRE_DATA_DIR"))
    ap.add_argument("--name", default="cross-domain-ml-100k")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        budgets = [-1 if b.strip() == "all" else int(b) for b in a.budgets.split(",")]
    except ValueError:
        ap.error(f"--budgets: comma-separated integers or 'all', got {a.budgets!r}")
    if any(b < -1 for b in budgets):
        ap.error("--budgets must be >= 0 (or 'all')")
    if a.trainable_layers is not None and a.trainable_layers < 0:
        ap.error("--trainable-layers must be >= 0")
    enc_over = {} if a.trainable_layers is None else {"encoder": {"trainable_layers": a.trainable_layers}}
    from genre_edge_export.train import train
    from genre_edge_export.train_config import load_config, packaged_config

    work = Path(a.work)
    t0 = time.perf_counter()
    src_dir = work / "source"
    log.info("source domain ...")
    def conf_path(spec):
        return spec if spec.endswith(".toml") else packaged_config(spec)

    src_conf = load_config(conf_path(a.source_config), enc_over)
    src = train(src_conf, src_dir, a.data_dir, restart=True, progress=False)
    target_cfg = conf_path(a.target_config)
    rows = []
    zero_shot = transfer0 = None
    for b in budgets:
        cap = 0 if b == -1 else b
        row = {"target_positives": "all" if b == -1 else b}
        if b == 0:
            rows.append(row)  # filled from the runs below (no training at 0)
            continue
        for arm, init in (("target_alone", ""), ("transfer", str(src_dir))):
            log.info("target, %s positives, %s ...", row["target_positives"], arm)
            conf = load_config(target_cfg, {**enc_over, "name": f"target-{arm}-{row['target_positives']}",
                                            "train": {"max_train_positives": cap, "init_from": init,
                                                      "freeze_epochs": 1 if init else 0}})
            rep = train(conf, work / f"target-{arm}-{row['target_positives']}", a.data_dir, restart=True,
                        progress=False)
            row[arm] = {"test": rep["teacher"]["test"], "valid": rep["teacher"]["valid"],
                        "positives": rep["train_positives"], "seconds": rep["train_seconds"],
                        "best_epoch": rep["best_epoch"]}
            zero_shot = rep["zero_shot"] if not init else zero_shot
            transfer0 = rep["transfer_initial"] if init else transfer0
        if a.multi_config:
            row["multi_task"] = multi_task(conf_path(a.multi_config), cap, work / f"multi-{row['target_positives']}",
                                           enc_over, a.data_dir)
        rows.append(row)
    for row in rows:
        if row["target_positives"] == 0:
            row["target_alone"] = {"test": zero_shot["test"], "valid": zero_shot["valid"], "note": "untrained encoder"}
            row["transfer"] = {"test": transfer0["test"], "valid": transfer0["valid"], "note": "source model as is"}
    res = {"machine": machine(), "source": {"data": src["data"], "test": src["teacher"]["test"],
                                           "split": src["split"]},
           "trainable_layers": src_conf.encoder.trainable_layers,
           "target_split": None, "rows": rows, "seconds": time.perf_counter() - t0,
           "command": "python benchmarks/cross_domain.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    res["target_split"] = json.loads((work / f"target-transfer-{rows[-1]['target_positives']}" / "report.json")
                                     .read_text())["split"] if any(r["target_positives"] != 0 for r in rows) else None
    from genre_edge.bench.report import write_results

    write_results(a.out, a.name, res, markdown(res))
    print(markdown(res))
    return 0


def multi_task(path, cap: int, out: Path, enc_over: dict, data_dir) -> dict:
    """Source + target in one multi-domain run, the target learning from ``cap`` positives (0 = all)."""
    from genre_edge import config as cfgmod
    from genre_edge_export.train import train
    from genre_edge_export.train_config import Config

    raw = cfgmod.read_toml(path)
    if len(raw.get("domains", [])) != 2:
        raise SystemExit(f"{path}: the multi-task config needs exactly 2 [[domains]] (source, target)")
    raw["domains"][1]["max_train_positives"] = cap
    raw = cfgmod.deep_merge(raw, enc_over)
    conf = cfgmod.from_dict(Config, raw, f"{path}:")
    log.info("multi-task, target %s positives ...", cap or "all")
    rep = train(conf, out, data_dir, restart=True, progress=False)
    src, tgt = (rep["domains"][d.name] for d in conf.domains)
    return {"test": tgt["test"], "valid": tgt["valid"], "positives": tgt["train_positives"],
            "source_test": src["test"], "seconds": rep["train_seconds"], "best_epoch": rep["best_epoch"]}


def encoder_words(n: int) -> str:
    return "frozen" if n == 0 else f"top {n} layer{'s' if n > 1 else ''} fine-tuned"


def markdown(res: dict) -> str:
    L = ["# Cross-domain transfer: ml-100k genre groups", "", machine_markdown(res["machine"]), "",
         f"Command: `{res['command']}` ({res['seconds'] / 60:.1f} min)", "",
         "Source: Drama / Comedy / Romance items (none of the target genres); target: Sci-Fi / Action / Thriller / "
         "Horror items. Content models (no CF part), MiniLM "
         f"({encoder_words(res.get('trainable_layers', 0))}) + adapter + attention user model. "
         f"Source model test nDCG@10 on its own domain: {res['source']['test'].get('ndcg@10', 0):.4f}.", "",
         "Target test users' full histories are the model input; the budget is how many target training "
         "positives the model learns from (a seeded sample).", "",
         "| target positives | target alone nDCG@10 | transfer nDCG@10 | gain | multi-task nDCG@10 | gain | "
         "target alone R@20 | transfer R@20 | multi-task R@20 | multi-task: source nDCG@10 |",
         "|---|---|---|---|---|---|---|---|---|---|"]

    def gain(x, base):
        return f"{(x / base - 1) * 100:+.1f}%" if base else "n/a"

    for r in res["rows"]:
        a, t = r["target_alone"]["test"], r["transfer"]["test"]
        m = r.get("multi_task")
        mt = (f"{m['test']['ndcg@10']:.4f}", gain(m["test"]["ndcg@10"], a["ndcg@10"]), f"{m['test']['recall@20']:.4f}",
              f"{m['source_test']['ndcg@10']:.4f}") if m else ("n/a", "", "n/a", "")
        L.append(f"| {r['target_positives']} | {a['ndcg@10']:.4f} | {t['ndcg@10']:.4f} | "
                 f"{gain(t['ndcg@10'], a['ndcg@10'])} | {mt[0]} | {mt[1]} | {a['recall@20']:.4f} | "
                 f"{t['recall@20']:.4f} | {mt[2]} | {mt[3]} |")
    L += ["", "At 0 positives: target alone = the untrained encoder (mean of history embeddings); transfer = the "
          "source model as it is; multi-task is not run (the target's user model and head would learn nothing).",
          "Gains are relative to target alone. The last column is the source domain's test nDCG@10 in the "
          "multi-task run (source trained alone: the number above).", ""]
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
