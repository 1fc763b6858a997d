"""Training on a large log on one machine: load + one epoch of the content model, time and peak RSS.

    python benchmarks/train_large.py --events 20000000 --users 1000000 --items 100000

A synthetic log (no public log this size is reachable here; ``load_bench.write_log``: long-tailed item
popularity, uniform users and times, every event a positive) is trained with ``genre train`` in a child
process: the content model (frozen encoder + adapter, attention user model, dot head, no CF: EASE's dense
items x items inverse does not fit at 100k items and is refused), one epoch over every training positive,
validation on a sample of users. Peak RSS is the child's (``ru_maxrss`` of the process tree's largest).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import write_log  # noqa: E402
from machine import machine, machine_markdown  # noqa: E402

CONFIG = """name = "large-content"
[data]
source = "{data}"
[split]
kind = "user_holdout"
valid_last_n = 1
test_last_n = 1
[encoder]
max_tokens = 16
template = "{{title}}"
trainable_layers = 0
[user_model]
kind = "attention"
max_history = 50
[head]
kind = "dot"
[cf]
kind = "none"
[train]
epochs = 1
steps_per_epoch = {steps}
batch_size = {batch}
negatives = 128
impression_negatives = 0
max_eval_users = {eval_users}
interpolate = false
threads = {threads}
precision = "{precision}"
device = "{device}"
"""


def main(argv=None) -> int:
    from genre_edge.bench.report import write_results

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--eval-users", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="train.precision")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="train.device (cuda: a CUDA "
                    "build of torch and a GPU)")
    ap.add_argument("--steps", type=int, default=0, help="training steps (0 = one epoch over every positive); the "
                    "epoch time is then extrapolated from the steps' time")
    ap.add_argument("--tmp", default=None, help="folder for the log and the model (~1 GB at 20M events)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="genre-train-large-", dir=a.tmp) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        data = write_log(tmp, a.events, a.users, a.items)
        text = data.read_text().replace('rating = "rating"\n', "")  # every event a positive
        data.write_text(text)
        gen_s = time.perf_counter() - t
        conf = tmp / "large.toml"
        conf.write_text(CONFIG.format(data=data, batch=a.batch, eval_users=a.eval_users, threads=a.threads,
                                      steps=a.steps, precision=a.precision, device=a.device))
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "genre_edge.cli", "train", "--config", str(conf), "--out",
                            str(tmp / "model")], capture_output=True, text=True)
        wall = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if p.returncode != 0:
            raise SystemExit(f"genre train failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
        rep = json.loads((tmp / "model" / "report.json").read_text())
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp / "model" / "tb"), size_guidance={"scalars": 0})
        acc.Reload()
        steps = acc.Scalars("step/loss") if "step/loss" in acc.Tags().get("scalars", []) else []
    hist = rep.get("history") or [{}]
    n_steps = len(steps)
    positives = int((rep.get("train_positives") or {}).get("used", 0))
    epoch_steps = -(-positives // a.batch)
    # wall time between the first and the last logged step loss, per step (the steps alone: not the item
    # encoding or the validation before and after them)
    step_s = (steps[-1].wall_time - steps[0].wall_time) / (n_steps - 1) if n_steps > 1 else float("nan")
    res = {"machine": machine(), "precision": a.precision, "device": rep.get("device", a.device), "events": a.events, "users": a.users, "items": a.items, "batch": a.batch,
           "generate_s": gen_s, "train_wall_s": wall, "train_seconds": rep.get("train_seconds"),
           "peak_rss_mib": peak, "train_positives": positives, "epoch": hist[-1],
           "zero_shot": rep.get("zero_shot"), "steps": n_steps, "epoch_steps": epoch_steps, "step_s": step_s,
           "epoch_s_extrapolated": step_s * epoch_steps,
           "command": "python benchmarks/train_large.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    L = [f"# Training on a large log: {a.events:,} events, {a.users:,} users, {a.items:,} items (one machine)", "",
         machine_markdown(res["machine"]), "", f"Command: `{res['command']}`", "",
         "`genre train` in a child process, the content model (frozen encoder + adapter, attention user model, dot "
         "head, no CF), " + ("one epoch over every training positive" if not a.steps else
                             f"the first {a.steps} steps of an epoch (its time extrapolated from theirs)")
         + f", batch {a.batch}, 128 shared negatives, {a.precision} on {res['device']}, validation nDCG@10 on {a.eval_users:,} users (synthetic "
         "events carry no signal: the metric only shows the pipeline ran).", "",
         "| step | value |", "|---|---|",
         f"| wall time of `genre train` (load, split, item encoding, the steps, validation, save) | {wall / 60:.1f} min |",
         f"| of which training (report) | {(rep.get('train_seconds') or float('nan')) / 60:.1f} min |",
         f"| peak RSS | {peak:,.0f} MiB |",
         f"| training positives | {positives:,} |",
         f"| steps run / steps in one epoch | {n_steps:,} / {epoch_steps:,} |",
         f"| seconds per step (batch {a.batch}) | {step_s:.2f} |",
         f"| one epoch at that rate | {step_s * epoch_steps / 3600:.1f} h |",
         f"| validation nDCG@10 after the epoch | {hist[-1].get('valid_ndcg@10', float('nan')):.4f} |", ""]
    write_results(a.out, a.name or f"train-large-{a.events // 1_000_000}m", res, "\n".join(L))
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main())
