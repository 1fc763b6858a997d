"""A run's training curves as one PNG: the teacher's losses and validation nDCG@10 per epoch (with the
zero-shot level), the choices made after training (blend recency grid, WiSE-FT grid) and the student's
distillation (loss, cosine to the teacher). Reads the TensorBoard event files `genre train` / `genre
distill` write (`<model folder>/tb`).

    python benchmarks/plot_curves.py --run runs/quickstart --out benchmarks/results/curves-ml-100k-quick.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def plot(run: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genre_edge_export.curves import TB_DIR, read_scalars

    parts = {name: read_scalars(run / name / TB_DIR) for name in ("teacher", "student") if (run / name / TB_DIR).is_dir()}
    if "teacher" not in parts:
        raise SystemExit(f"{run}: no teacher/{TB_DIR} folder (train with this version to write curves)")
    t, s = parts["teacher"], parts.get("student", {})
    fig, ax = plt.subplots(2, 3, figsize=(14, 7.5))

    def line(a, series, label, **kw):
        if series:
            a.plot([x for x, _ in series], [y for _, y in series], marker="o", ms=3, label=label, **kw)

    a = ax[0, 0]
    line(a, t.get("epoch/train_loss"), "train loss")
    line(a, t.get("epoch/valid_loss"), "valid loss")
    a.set(title="teacher: losses per epoch", xlabel="epoch")
    a.legend()
    a = ax[0, 1]
    line(a, t.get("epoch/valid_ndcg@10"), "valid nDCG@10")
    line(a, t.get("epoch/valid_recall@20"), "valid recall@20")
    if t.get("zero_shot/valid_ndcg@10"):
        a.axhline(t["zero_shot/valid_ndcg@10"][0][1], ls="--", color="grey", label="zero-shot nDCG@10")
    a.set(title="teacher: validation per epoch", xlabel="epoch")
    a.legend(fontsize=8)
    a = ax[0, 2]
    if s:
        line(a, s.get("distill/cos_mean"), "cosine to teacher, items (mean)")
        line(a, s.get("distill/request_cos_mean"), "cosine, held-out requests (mean)")
        a.set(title="student: distillation per epoch", xlabel="epoch")
        a.legend(fontsize=8)
    else:
        a.set(title="student: no distillation curves in this run")
    a = ax[1, 0]
    steps = t.get("step/loss") or []
    if steps:
        w = max(1, len(steps) // 50)  # a running mean: step losses are noisy
        ys = [sum(y for _, y in steps[max(0, i - w + 1): i + 1]) / len(steps[max(0, i - w + 1): i + 1])
              for i in range(len(steps))]
        a.plot([x for x, _ in steps], ys, label=f"teacher step loss (mean of {w})")
    if s.get("distill_step/loss"):
        a.plot(*zip(*s["distill_step/loss"]), alpha=.6, label="student step loss")
    a.set(title="loss per step", xlabel="step")
    a.legend(fontsize=8)
    a = ax[1, 1]
    line(a, t.get("calibration/recency_valid_ndcg@10"), "valid nDCG@10")
    for tag in sorted(x for x in t if x.startswith("calibration/recency_floor")):  # one series per floor
        line(a, t[tag], f"valid nDCG@10, floor {tag[len('calibration/recency_floor'):].split('_')[0]}")
    if t.get("calibration/chosen_recency_half_life"):
        a.axvline(t["calibration/chosen_recency_half_life"][0][1], ls="--", color="grey", label="chosen")
    a.set(title="blend calibration: CF recency half-life", xlabel="half-life (history items)")
    a.legend(fontsize=8)
    a = ax[1, 2]
    if not t.get("wise/valid_ndcg@10"):
        a.set(title="WiSE-FT: not used in this run")
        a.set_axis_off()
    line(a, t.get("wise/valid_ndcg@10"), "warm valid nDCG@10")
    line(a, t.get("wise/cold_valid_ndcg@10"), "cold-valid nDCG@10")
    if t.get("wise/chosen_alpha"):
        a.axvline(100 * t["wise/chosen_alpha"][0][1], ls="--", color="grey", label="chosen")
    if t.get("wise/valid_ndcg@10"):
        a.set(title="WiSE-FT: trained share of the encoder", xlabel="alpha x 100")
        a.legend(fontsize=8)
    fig.suptitle(f"training curves: {run.name} (teacher/tb, student/tb)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="work folder holding teacher/ (and student/)")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default: RUN/curves.png)")
    a = ap.parse_args(argv)
    print(plot(a.run, a.out or a.run / "curves.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
