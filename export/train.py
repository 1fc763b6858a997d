"""``genre train``: one domain (:class:`~genre_edge_export.trainer.Trainer`) or several trained
together (:mod:`genre_edge_export.multidomain`)."""
from __future__ import annotations

import os
from pathlib import Path

from genre_edge.errors import ConfigError

from .multidomain import train_multi
from .train_config import Config
from .trainer import Trainer


def train(conf: Config, out_dir: str | Path, data_dir: str | None = None, restart: bool = False,
          progress: bool = True, dataset=None) -> dict:
    """Train a teacher from ``conf`` into ``out_dir``; resumes from ``out_dir/checkpoint``. A config with
    ``[[domains]]`` trains them together (export/multidomain.py): one model folder per domain."""
    if conf.domains:
        if dataset is not None:
            raise ConfigError("a multi-domain config reads its data sets from [[domains]]; dataset= is for one domain")
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            raise ConfigError("a multi-domain config trains in one process; launch it without accelerate/torchrun")
        return train_multi(conf, out_dir, data_dir, restart=restart, progress=progress)
    t = Trainer(conf, out_dir, data_dir, dataset, progress)
    try:
        return t.fit(restart=restart)
    finally:
        t.dp.close()  # several processes: wait for all, then remove the other ranks' private folders
