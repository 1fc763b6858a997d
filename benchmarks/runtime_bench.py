"""Runtime benchmark: request latency, throughput, memory and cold start of a bundle on a profile.

Every measurement runs in a fresh child process that imports only the runtime (no torch, no
matplotlib), so RSS and start-up time are what an appliance would see:

* cold start: ``import genre_edge`` -> verified load -> first answer, repeated; the first run uses an
  empty optimized-model cache (first boot), the others a warm one;
* latency: warm-up, then repeated requests (50-item history, full-catalog scoring, MMR top-10;
  the same plus a free-text query; embedding one query), p50/p95/p99 and sequential throughput;
* memory: RSS after load, after the first answer and after the latency run, and the peak.

Writes ``<out>/runtime-<name>.json`` and ``.md`` (and ``.png`` when matplotlib is installed).

    python benchmarks/runtime_bench.py --bundle runs/quickstart/bundle --profile x86-avx512-vnni
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, machine_markdown  # noqa: E402

log = logging.getLogger("runtime_bench")

# Targets of the runtime issue (one thread, ml-100k int8 bundle, this machine).
TARGETS = {"history 50, MMR top-10 p50 ms": 1.0, "history 50 + query, MMR top-10 p50 ms": 2.5,
           "RSS after load MiB": 150.0, "load to first answer s": 1.0}

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from genre_edge.recommender import Recommender
t_import = time.perf_counter()
def rss(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")
bundle, profile, reps, hist_len = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rec = Recommender.load(bundle, profile)
t_load = time.perf_counter()
rss_load = rss()
ids = [rec.catalog.ids[i] for i in range(min(hist_len, len(rec.catalog.ids)))]
first = rec.recommend(ids, k=10, mmr_lambda=0.7)
t_first = time.perf_counter()
out = {"import_s": t_import - t0, "load_s": t_load - t_import, "first_request_s": t_first - t_load,
       "load_to_first_answer_s": t_first - t0, "rss_after_load_mib": rss_load, "rss_after_first_mib": rss(),
       "variant": rec.variant, "profile": rec.profile.name, "n_items": int(rec.catalog.active.sum()),
       "first_items": [r.id for r in first.items]}
if reps:
    from genre_edge.bench.harness import latency_bench
    out["latency"] = latency_bench(rec, hist_len, reps)
    out["rss_after_bench_mib"] = rss()
out["rss_peak_mib"] = rss("VmHWM")
print("RESULT " + json.dumps(out))
"""


def run_child(bundle: str, profile: str, reps: int, hist_len: int, cache_dir: str | None) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    if cache_dir:
        env["GENRE_CACHE_DIR"] = cache_dir
    p = subprocess.run([sys.executable, "-c", CHILD, bundle, profile, str(reps), str(hist_len)], env=env,
                       capture_output=True, text=True, timeout=1800)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise SystemExit(f"benchmark child failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def summarize(runs: list[dict], first_boot: dict, bench: dict) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in
           ("import_s", "load_s", "first_request_s", "load_to_first_answer_s", "rss_after_load_mib")}
    lat = bench["latency"]
    measured = {
        "history 50, MMR top-10 p50 ms": next(v["p50"] for k, v in lat.items() if "MMR" in k and "query" not in k),
        "history 50 + query, MMR top-10 p50 ms": next(v["p50"] for k, v in lat.items() if "query" in k),
        "RSS after load MiB": med["rss_after_load_mib"],
        "load to first answer s": med["load_to_first_answer_s"],
    }
    return {
        "cold_start": {"runs": len(runs), "median": med, "first_boot": {k: first_boot[k] for k in med}},
        "latency_ms": lat,
        "throughput_rps": {k: 1000.0 / v["mean"] for k, v in lat.items()},
        "memory_mib": {"after_load": bench["rss_after_load_mib"], "after_first_answer": bench["rss_after_first_mib"],
                       "after_latency_run": bench["rss_after_bench_mib"], "peak": bench["rss_peak_mib"]},
        "targets": {k: {"target": TARGETS[k], "measured": measured[k], "met": measured[k] <= TARGETS[k]}
                    for k in TARGETS},
        "variant": bench["variant"], "profile": bench["profile"], "n_items": bench["n_items"],
    }


def markdown(res: dict, name: str) -> str:
    lines = [f"# Runtime benchmark: {name}", "",
             f"Profile `{res['profile']}`, encoder variant `{res['variant']}`, {res['n_items']} catalog items, "
             "one intra-op thread. Each number comes from a fresh process that imports only the runtime.", "",
             machine_markdown(res["machine"]), "", f"Command: `{res['command']}`", "",
             "## Targets", "", "| measure | target | measured | met |", "|---|---|---|---|"]
    for k, v in res["targets"].items():
        lines.append(f"| {k} | <= {v['target']:g} | {v['measured']:.3f} | {'yes' if v['met'] else '**no**'} |")
    lines += ["", "## Latency (ms) and sequential throughput", "",
              "| request | p50 | p95 | p99 | mean | n | req/s |", "|---|---|---|---|---|---|---|"]
    for k, v in res["latency_ms"].items():
        lines.append(f"| {k} | {v['p50']:.3f} | {v['p95']:.3f} | {v['p99']:.3f} | {v['mean']:.3f} | {v['n']} | "
                     f"{res['throughput_rps'][k]:.0f} |")
    cs = res["cold_start"]
    lines += ["", f"## Cold start (median of {cs['runs']} fresh processes; first boot = empty optimized-model cache)",
              "", "| phase | median | first boot |", "|---|---|---|"]
    for k in cs["median"]:
        unit = "MiB" if k.endswith("mib") else "s"
        lines.append(f"| {k} | {cs['median'][k]:.3f} {unit} | {cs['first_boot'][k]:.3f} {unit} |")
    mem = res["memory_mib"]
    lines += ["", "## Memory (RSS, MiB)", "", "| after load | after first answer | after latency run | peak |",
              "|---|---|---|---|",
              f"| {mem['after_load']:.1f} | {mem['after_first_answer']:.1f} | {mem['after_latency_run']:.1f} | "
              f"{mem['peak']:.1f} |", ""]
    return "\n".join(lines)


def chart(res: dict, path: Path) -> bool:
    from genre_edge.bench.report import pyplot, save_png

    plt = pyplot()
    if plt is None:
        return False
    lat = res["latency_ms"]
    names = list(lat)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for j, q in enumerate(("p50", "p95", "p99")):
        ax.barh([i + j * 0.27 for i in range(len(names))], [lat[n][q] for n in names], height=0.27, label=q)
    ax.set_yticks([i + 0.27 for i in range(len(names))], names)
    ax.set_xlabel("ms per request (1 thread)")
    ax.set_title(f"genre-edge runtime, {res['profile']} / {res['variant']}")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--profile", default="x86-avx512-vnni")
    ap.add_argument("--name", default=None, help="result file stem (default: <bundle dir name>-<profile>)")
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--history-len", type=int, default=50)
    ap.add_argument("--starts", type=int, default=5, help="fresh processes for the cold-start median")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.reps < 10 or a.starts < 1:
        ap.error("--reps must be >= 10 and --starts >= 1")
    if not (Path(a.bundle) / "manifest.json").is_file():
        ap.error(f"--bundle {a.bundle}: no manifest.json there (build one with 'genre quickstart' or 'genre export')")
    name = a.name or f"{Path(a.bundle).resolve().name}-{a.profile}"
    with tempfile.TemporaryDirectory() as empty_cache:
        log.info("first boot (empty optimized-model cache) ...")
        first = run_child(a.bundle, a.profile, 0, a.history_len, empty_cache)
        runs = []
        for i in range(a.starts):
            log.info("cold start %d/%d ...", i + 1, a.starts)
            runs.append(run_child(a.bundle, a.profile, 0, a.history_len, empty_cache))
        log.info("latency: %d requests per scenario ...", a.reps)
        bench = run_child(a.bundle, a.profile, a.reps, a.history_len, empty_cache)
    res = summarize(runs, first, bench)
    res["machine"] = machine()
    res["command"] = "python benchmarks/runtime_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from genre_edge.fsutil import atomic_write_json, atomic_write_text

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"runtime-{name}.json", res)
    atomic_write_text(out / f"runtime-{name}.md", markdown(res, name))
    chart(res, out / f"runtime-{name}.png")
    print(markdown(res, name))
    return 0 if all(v["met"] for v in res["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
