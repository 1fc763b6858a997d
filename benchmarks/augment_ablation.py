"""Does text augmentation help? The quick ml-100k preset trained without and with each augmentation,
same split and metrics, each compared with the plain run by the offline A/B replay (warm test users
and cold items). One training seed per row: the intervals cover the users, not the training noise.

    python benchmarks/augment_ablation.py --work runs/augment      (about 20 min here)

A row whose ``<work>/<name>/report.json`` exists is not trained again.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from genre_edge.bench.machine import machine, machine_markdown  # noqa: E402

log = logging.getLogger("augment_ablation")
BASE = "ml-100k-quick"
VARIANTS = {  # name -> [augment] section (variants = 2, prob = 0.5 for all)
    "none": {},
    "fields": {"field_dropout": 0.3},
    "tokens": {"token_deletion": 0.1, "token_swap": 0.05},
    "synonyms": {"synonyms": 0.15},
    "all": {"field_dropout": 0.3, "token_deletion": 0.1, "token_swap": 0.05, "synonyms": 0.15},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/augment")
    ap.add_argument("--base", default=BASE, help="training config (packaged name or TOML path) to augment")
    ap.add_argument("--dir", dest="data_dir", default=os.environ.get("GENRE_DATA_DIR"))
    ap.add_argument("--name", default="augment-ml-100k")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)} (none first)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import json

    from genre_edge_export.ab import replay
    from genre_edge_export.train import train
    from genre_edge_export.train_config import load_config, packaged_config

    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    if not names or names[0] != "none" or any(v not in VARIANTS for v in names):
        ap.error(f"--variants: names from {', '.join(VARIANTS)}, starting with none (the A side)")
    work = Path(a.work)
    rows = []
    for name in names:
        aug = VARIANTS[name]
        d = work / name
        if not (d / "report.json").is_file():
            log.info("training %s ...", name)
            over = {"name": f"quick-aug-{name}"} | ({"augment": {**aug, "variants": 2, "prob": 0.5}} if aug else {})
            base = a.base if a.base.endswith(".toml") else packaged_config(a.base)
            train(load_config(base, over), d, a.data_dir, restart=True, progress=False)
        rep = json.loads((d / "report.json").read_text())
        row = {"name": name, "augment": aug, "valid": rep["teacher"]["valid"], "test": rep["teacher"]["test"],
               "cold": rep["teacher"]["cold"], "train_seconds": rep["train_seconds"]}
        if name != "none":
            for which in ("test", "cold"):
                ab = replay(str(work / "none"), str(d), a.base, a.data_dir, which=which, n_boot=a.bootstrap)
                row[f"ab_{which}"] = ab["comparison"]["ndcg@10"]
        rows.append(row)
    res = {"machine": machine(), "base": a.base, "rows": rows,
           "command": "python benchmarks/augment_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    from genre_edge.bench.report import write_results

    write_results(a.out, a.name, res, markdown(res))
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    L = ["# Text augmentation on ml-100k (quick preset)", "", machine_markdown(res["machine"]), "",
         f"Command: `{res['command']}`", "",
         f"`{res['base']}` trained without and with each augmentation (2 augmented renderings per item, shown for "
         "half the training examples); nDCG@10 on the same split. B - A: offline A/B replay against `none` "
         "(95% paired-bootstrap interval, sign-flip permutation p). One training seed per row.", "",
         "| augmentation | valid | warm test | B - A warm [95% CI], p | cold items | B - A cold [95% CI], p |",
         "|---|---|---|---|---|---|"]

    def ab(r, w):
        c = r.get(f"ab_{w}")
        if not c:
            return "-"
        star = " *" if c["p_permutation"] < 0.05 and (c["ci95"][0] > 0 or c["ci95"][1] < 0) else ""
        return f"{c['diff']:+.4f}{star} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}], p {c['p_permutation']:.3f}"

    for r in res["rows"]:
        desc = ", ".join(f"{k} {v}" for k, v in r["augment"].items()) or "none"
        L.append(f"| {r['name']}: {desc} | {r['valid']['ndcg@10']:.4f} | {r['test']['ndcg@10']:.4f} | {ab(r, 'test')} | "
                 f"{r['cold']['ndcg@10']:.4f} | {ab(r, 'cold')} |")
    L += ["", "`*`: the interval excludes 0 and p < 0.05.", ""]
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
