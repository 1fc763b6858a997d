"""GPU host check: provider placement, fp16-on-GPU parity with the CPU, per-stage latency, bulk embedding.

For a user with an NVIDIA GPU and onnxruntime-gpu (see the README's GPU section):

    python benchmarks/gpu_bench.py --bundle runs/gpu-bundle --profile x86-cuda --out runs/bench

The bundle needs the ``fp16`` encoder variant (`genre export ... --profile x86-cuda`). Reported, side by
side with the CPU profile this machine detects:

* placement: the execution providers each session (encoder, user model, head) really runs on;
* parity: embeddings of the catalog texts on the GPU profile vs the CPU profile (cosine min/mean), and
  top-10 agreement of requests (history only, and history + free-text query);
* per-stage latency (p50/p99 of the response's stage timings) for both kinds of request;
* bulk catalog embedding: texts/s at the profile's batch size.

Without onnxruntime-gpu it stops with the install line (exit 2); ``--allow-cpu`` runs it anyway on the
CPU fallback (what CI does, to keep the script working; those numbers say nothing about a GPU).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402


def _stats(xs) -> dict:
    a = np.asarray(xs, np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "n": int(len(a))}


def _requests(rec, n: int, seed: int = 0) -> list[tuple[list[str], str | None]]:
    rng = np.random.default_rng(seed)
    ids = rec.catalog.ids[: rec.catalog.n_bundle]
    queries = ("a dark thriller", "something light and funny", "a film for kids", "a romantic drama")
    return [(list(rng.choice(ids, size=min(50, len(ids)), replace=False)), None if i % 2 == 0 else queries[i % 4])
            for i in range(n)]


def measure(rec, reqs, reps: int, texts: list[str]) -> dict:
    out = {"variant": rec.variant, "profile": rec.profile.name,
           "placement": {"encoder": rec.encoder.session.get_providers()[0],
                         "user": rec.user_model.session.get_providers()[0],
                         "head": rec.head_session.get_providers()[0] if rec.head_session is not None else None}}
    for kind, sel in (("history", [r for r in reqs if r[1] is None]), ("history+query", [r for r in reqs if r[1]])):
        stages: dict[str, list] = {}
        for i in range(reps + 5):
            h, q = sel[i % len(sel)]
            t = rec.recommend(h, query=q, k=10, mmr_lambda=0.7).timings_ms
            if i >= 5:
                for s, v in t.items():
                    stages.setdefault(s, []).append(v)
        out[kind] = {s: _stats(v) for s, v in stages.items()}
    rec.embed(texts[:64])  # warm-up (GPU: kernels, memory pools)
    t0 = time.perf_counter()
    emb = rec.embed(texts)
    out["bulk"] = {"texts": len(texts), "batch": rec.profile.max_batch,
                   "texts_per_s": len(texts) / (time.perf_counter() - t0)}
    out["_emb"] = emb
    out["_tops"] = [[x.id for x in rec.recommend(h, query=q, k=10).items] for h, q in reqs]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--profile", default="x86-cuda", help="the GPU profile (name or TOML)")
    ap.add_argument("--cpu-profile", default="auto", help="the reference CPU profile")
    ap.add_argument("--requests", type=int, default=36)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--texts", type=int, default=10000, help="catalog texts embedded in bulk (repeated if fewer)")
    ap.add_argument("--allow-cpu", action="store_true", help="run even without onnxruntime-gpu (CPU fallback)")
    ap.add_argument("--out", default="runs/bench")
    a = ap.parse_args(argv)
    import tempfile

    from genre_edge.bench.report import markdown_table, write_report
    from genre_edge.profile import available_providers, load_profile
    from genre_edge.recommender import Recommender

    gpu_prof = load_profile(a.profile)
    have = available_providers()
    accel = [p.name for p in gpu_prof.providers if p.name != "CPUExecutionProvider"]
    if not set(accel) & set(have) and not a.allow_cpu:
        print(f"profile {gpu_prof.name} needs {' or '.join(accel)}; this onnxruntime has {', '.join(have)}.\n"
              "Install the GPU build in place of the CPU one (same version): pip uninstall -y onnxruntime && "
              "pip install onnxruntime-gpu   (or pass --allow-cpu to run on the CPU fallback)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        gpu = Recommender.load(a.bundle, gpu_prof, state_dir=Path(tmp) / "g")
        cpu = Recommender.load(a.bundle, a.cpu_profile, state_dir=Path(tmp) / "c")
        reqs = _requests(cpu, a.requests)
        items = json.loads(Path(a.bundle, gpu.bundle.manifest.catalog.items).read_text())
        base = [t for t in items.get("text", []) if t] or [f"{t}" for t in gpu.catalog.titles]
        texts = (base * (a.texts // max(len(base), 1) + 1))[: a.texts]
        g, c = measure(gpu, reqs, a.reps, texts), measure(cpu, reqs, a.reps, texts)
    ge, ce = g.pop("_emb"), c.pop("_emb")
    cos = (ge * ce).sum(1) / (np.linalg.norm(ge, axis=1) * np.linalg.norm(ce, axis=1) + 1e-12)
    gt, ct = g.pop("_tops"), c.pop("_tops")
    parity = {"embedding_cos_min": float(cos.min()), "embedding_cos_mean": float(cos.mean()),
              "top10_identical": sum(x == y for x, y in zip(gt, ct)), "requests": len(gt),
              "top10_overlap_mean": float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(gt, ct)]))}
    res = {"machine": machine(), "onnxruntime_providers": list(have), "gpu": g, "cpu": c, "parity": parity,
           "gpu_present": bool(set(accel) & set(have)),
           "command": "python benchmarks/gpu_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    rows = []
    for name, r in (("gpu profile", g), ("cpu profile", c)):
        for kind in ("history", "history+query"):
            st = r[kind]
            rows.append({"profile": f"{name} ({r['profile']}, {r['variant']})", "request": kind,
                         **{s: f"{st[s]['p50']:.3f}" for s in ("tokenize", "encode", "user_model", "score", "rerank",
                                                               "total") if s in st}})
    md = [f"# GPU host check: {Path(a.bundle).name}", "", machine_markdown(res["machine"]), "",
          f"Command: `{res['command']}`", "",
          ("" if res["gpu_present"] else "**No GPU provider in this onnxruntime: the 'GPU' rows ran on the CPU "
           "fallback (a check that the script works, not a GPU measurement).**"), "",
          "Placement (first provider of each session): GPU profile " + json.dumps(g["placement"]) + "; CPU profile "
          + json.dumps(c["placement"]), "",
          "## Per-stage latency, p50 ms", "",
          markdown_table(rows, ["profile", "request", "tokenize", "encode", "user_model", "score", "rerank", "total"]),
          "## Parity (GPU profile vs CPU profile)", "",
          f"Embeddings of {len(texts)} catalog texts: cosine min {parity['embedding_cos_min']:.6f}, mean "
          f"{parity['embedding_cos_mean']:.6f}. Top-10 identical in {parity['top10_identical']} of "
          f"{parity['requests']} requests (mean overlap {parity['top10_overlap_mean']:.3f}).", "",
          "## Bulk embedding", "",
          f"GPU profile: {g['bulk']['texts_per_s']:.0f} texts/s at batch {g['bulk']['batch']}; CPU profile: "
          f"{c['bulk']['texts_per_s']:.0f} texts/s at batch {c['bulk']['batch']}.", ""]
    write_report(a.out, f"gpu-{Path(a.bundle).name}-{gpu_prof.name}", res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
