"""Training curves as TensorBoard event files next to the model (``<model folder>/tb``).

``genre train`` writes the step loss, each epoch's losses and validation metrics, the zero-shot level,
the blend calibration's grid and choice and the WiSE-FT grid and choice; ``genre distill`` its step loss
and each epoch's cosine to the teacher. View them with ``tensorboard --logdir <work folder>``, or as a
PNG with ``benchmarks/plot_curves.py``. Curves are a view, never a reason for training to fail: without
the ``tensorboard`` package (in the export extra) a warning says how to install it and nothing is written.
"""
from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

TB_DIR = "tb"


class Curves:
    """One run's event file writer (``with Curves(folder) as c: c.scalars(step, {...}, "valid/")``)."""

    def __init__(self, model_dir: str | Path, fresh: bool = False, enabled: bool = True):
        """``fresh``: a new run into this folder (earlier curves are removed: one run, one set of
        curves); otherwise a resumed run appends to them."""
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("training curves not written: the tensorboard package is missing "
                        "(pip install 'tensorboard>=2.14', part of the export extra)")
            return
        self.dir = Path(model_dir) / TB_DIR
        if fresh:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.writer = SummaryWriter(log_dir=str(self.dir), flush_secs=30)

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        """Add each finite number of ``values`` as ``prefix + name`` at ``step``."""
        if self.writer is None:
            return
        for name, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(prefix + name, float(v), int(step))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def training_choices(curves: Curves, report: dict) -> None:
    """The choices made after training, as curves: the recency grid of the blend calibration (step =
    half-life in history items, one series per floor), its popularity grid (step 0 static, then the trending
    half-lives), the blend weights chosen, and the WiSE-FT grid (step = alpha x 100)."""
    cal = report.get("calibration") or {}
    for row in cal.get("recency_grid", []):  # one series per floor (old reports: no floor in the rows)
        tag = f"calibration/recency_floor{row['floor']:g}_" if "floor" in row else "calibration/recency_"
        curves.scalars(round(row["half_life"]), {"valid_ndcg@10": row["valid_ndcg@10"]}, tag)
    for k, row in enumerate(cal.get("popularity_grid", [])):  # step: 0 = static, then the trending half-lives
        curves.scalars(k, {"valid_ndcg@10": row["valid_ndcg@10"]}, "calibration/popularity_")  # NaN: not searched
    if cal:
        curves.scalars(report.get("best_epoch") or 0, {"recency_half_life": cal.get("recency_half_life"),
                                                       "recency_floor": cal.get("recency_floor"),
                                                       "popularity_half_life_s": cal.get("popularity_half_life_s", 0.0),
                                                       **{f"weight_{k}": v for k, v in (cal.get("after") or {}).items()}},
                       "calibration/chosen_")
    wise = report.get("interpolation") or {}
    for row in wise.get("grid", []):
        curves.scalars(round(100 * row["alpha"]), {k: v for k, v in row.items() if k != "alpha"}, "wise/")
    if wise:
        curves.scalars(0, {"alpha": wise.get("alpha")}, "wise/chosen_")


def read_scalars(tb_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in ``tb_dir``: tag -> [(step, value)], in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    # the accumulator yields events in file-name order, and a resumed run's file can sort before the first one's
    # (the writer's per-process counter goes 9 -> 10 within one second): sort by step (stable for repeated steps)
    return {tag: sorted(((e.step, e.value) for e in acc.Scalars(tag)), key=lambda sv: sv[0])
            for tag in acc.Tags().get("scalars", [])}
