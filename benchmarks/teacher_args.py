"""The arguments and loading that the benchmarks reading trained teachers of one config share
(``content_headroom.py``, ``cold_prior.py``), and training one when it is missing (``hard_negatives.py``,
``cold_folds.py``)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def add_teacher_args(ap: argparse.ArgumentParser) -> None:
    """--config, --teachers, --dir, --threads, --name, --out."""
    ap.add_argument("--config", default="ml-100k-quick", help="training config (its data and split) of the teachers")
    ap.add_argument("--teachers", required=True, help="comma-separated teacher folders (training seeds)")
    ap.add_argument("--dir", dest="data_dir", default=None, help="data cache folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default="benchmarks/results")


def load_teachers(ap: argparse.ArgumentParser, a: argparse.Namespace):
    """(config path, Prepared data of the config, teacher folders, their ModelDirs); torch threads set from
    --threads; a teacher trained on other items than the config's data set is refused (exit 2)."""
    import torch

    from genre_edge_export.model_folder import ModelDir
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.train_config import load_config, packaged_config

    torch.set_num_threads(a.threads)
    cpath = Path(a.config) if Path(a.config).is_file() else packaged_config(a.config)
    prep = Prepared(load_config(cpath), a.data_dir)
    teachers = [t.strip() for t in a.teachers.split(",") if t.strip()]
    models = []
    for t in teachers:
        M = ModelDir(t)
        if list(M.items["ids"]) != list(prep.data.items.ids):
            ap.error(f"--teachers: {t} was trained on other items than --config {a.config}'s data set")
        models.append(M)
    return cpath, prep, teachers, models


def trained(config: str | Path, folder: Path, seed: int, data_dir: str | None = None) -> dict:
    """The report of ``genre train --config config --seed seed --out folder``, training it if missing (so an
    interrupted benchmark continues where it stopped)."""
    rep = Path(folder) / "report.json"
    if not rep.is_file():
        genre = Path(sys.executable).parent / "genre"
        subprocess.run([str(genre), "train", "--config", str(config), "--seed", str(seed), "--out", str(folder),
                        *(["--dir", data_dir] if data_dir else [])], check=True)
    return json.loads(rep.read_text())


def zscore(s):
    """Per-row z-scores (scores on different scales become comparable before they are added): the blends of
    ``content_headroom.py`` and ``cold_folds.py --mix``."""
    import numpy as np

    s = np.asarray(s, np.float64)
    return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)


def mean_sd(xs) -> str:
    """``"0.1508 +- 0.0012"``: the mean and sample sd of per-seed values (sd 0 for one seed), as the tables print
    trained rows."""
    import numpy as np

    return f"{np.mean(xs):.4f} +- {np.std(xs, ddof=1) if len(xs) > 1 else 0:.4f}"
