"""What this machine's CPU class gets from the demo bundle, in one report: the numbers to quote per class.

    make demo && make cpu-class-check
    python benchmarks/cpu_class_check.py --work runs/quickstart [--tests] [--items 100000]

Why: the runtime's arithmetic and speed differ by CPU class (ONNX Runtime's int8 kernels: VNNI, AVX2's
saturating ``vpmaddubsw``, NEON with or without dot-product; the encoder variant and the catalog index's query
width that ``--profile auto`` picks), and the machines this project runs on differ (some AVX-512 VNNI, some AVX2
only). The same three checks on each class, on the bundle ``make demo`` wrote:

1. **Encoder variant**: the variant the detected profile loads from the bundle, and the bundle's quality *here*
   (warm validation and cold-validation nDCG@10 of the bundle scored on this CPU's kernels, against the float
   teacher it came from: ``genre ab``'s replay, paired over users), against the export gate's floor (98%).
2. **Catalog index**: ``scale_curve.py`` at ``--items`` (default 100,000; a fresh process, one thread, the detected
   profile): end-to-end p50 of a 50-item history request, and the catalog index's top-200 overlap with float32,
   against the targets (< 5 ms p50, >= 0.99).
3. With ``--tests``: the test suite as the README runs it (``pytest tests``), counted from its JUnit XML.

Writes ``cpu-class-<profile>.{json,md}`` to ``--out``; exits 1 if a check misses its target. Timing is only
meaningful on real hardware: under QEMU (``GENRE_EMULATED_CORE`` set, as the shim of ``emulated_tests.py`` runs
are) the quality and overlap are that class's arithmetic, the latency is not judged, and the report is
``cpu-class-<profile>-emulated-<core>``. Needs the export extra (the teacher is replayed with PyTorch),
i.e. an x86 development machine; the Pi cores are checked by ``make test-arm64`` and ``make test-emulated``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from emulated_tests import EMULATED_ENV, junit  # noqa: E402

from genre_edge.bench.machine import machine, machine_markdown  # noqa: E402

log = logging.getLogger("cpu_class_check")
MIN_KEPT = 0.97  # the bundle's share of its teacher's nDCG@10 where its manifest names no floor (the demo's gate)
INDEX_ITEMS = 100_000
TARGET_MS = 5.0  # end-to-end p50 at 100k items, one thread
MIN_OVERLAP = 0.99  # the catalog index's top-200 vs float32


def encoder_check(work: Path) -> dict:
    """The variant ``--profile auto`` loads from ``work/bundle``, and what the bundle keeps of ``work/teacher``'s
    nDCG@10 on this machine, read as the export gate reads it (warm validation; cold-validation, the lower of with
    and without its top item) and held to the gate's own floors, next to what the gate measured at export."""
    from genre_edge.bundle import open_bundle
    from genre_edge.profile import load_profile
    from genre_edge.recommender import Recommender
    from genre_edge_export.ab import replay

    with tempfile.TemporaryDirectory() as state:
        rec = Recommender.load(work / "bundle", "auto", state_dir=state)
        variant, profile = rec.variant, rec.profile.name
        del rec
    gate = open_bundle(work / "bundle", verify=False).manifest.quality.gate
    at_export = (gate.variants or {}).get(variant, {}) if gate else {}
    # cold rows where the gate had cold-validation items to read (a split without them: warm only)
    cold = "cold" in at_export
    floors = {"warm": gate.min_kept if gate else MIN_KEPT}
    if cold:
        floors["cold"] = MIN_KEPT if gate.min_cold_kept is None else gate.min_cold_kept
    out = {"profile": profile, "variant": variant, "profile_detected": load_profile("auto").name, "floors": floors,
           "at_export": at_export, "rows": {}}
    arms: dict = {}  # the teacher's and the bundle's scores, built once per held-out set (drop levels reuse them)
    for key, which, drop in (("warm", "valid", 0), *((("cold", "cold_valid", 0), ("cold_wo_top1", "cold_valid", 1))
                                                     if cold else ())):
        r = replay(str(work / "teacher"), str(work / "bundle"), str(work / "teacher" / "config.toml"), which=which,
                   arms=arms, n_boot=1000, drop_top_items=drop)
        c = r["comparison"]["ndcg@10"]
        out["rows"][key] = {"teacher": c["mean_a"], "bundle": c["mean_b"], "users": c["users"], "ci95": c["ci95"],
                            "kept": c["mean_b"] / c["mean_a"] if c["mean_a"] > 0 else float("nan"),
                            "without": r["dropped_items"]}
    rows = out["rows"]
    out["kept"] = {"warm": rows["warm"]["kept"],
                   **({"cold": min(rows["cold"]["kept"], rows["cold_wo_top1"]["kept"])} if cold else {})}
    out["ok"] = all(out["kept"][k] >= floors[k] for k in floors)
    return out


def index_check(work: Path, items: int, tmp: Path, timed: bool = True) -> dict:
    """``scale_curve.py`` at ``items`` catalog rows on the detected profile: p50 and top-200 overlap (the latency
    target judged from ``INDEX_ITEMS`` rows on, and only where ``timed``: not under emulation)."""
    p = subprocess.run([sys.executable, str(HERE / "scale_curve.py"), "--bundle", str(work / "bundle"), "--profile",
                        "auto", "--sizes", str(items), "--history-at", "0", "--name", "scale", "--out", str(tmp)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"scale_curve.py failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    size = json.loads((tmp / "scale.json").read_text())["sizes"][-1]
    name = size["index"]  # the index the detected profile builds (auto: by this CPU)
    ix = size[name]
    out = {"items": size["n"], "index": name, "p50_ms": ix["recommend_ms"]["p50"], "p99_ms": ix["recommend_ms"]["p99"],
           "content_p50_ms": ix["content_ms"]["p50"], "fp32_p50_ms": size["fp32"]["recommend_ms"]["p50"],
           "top200_overlap": ix["index_vs_fp32"]["top200_overlap"], "max_abs_diff": ix["index_vs_fp32"]["max_abs_diff"]}
    out["latency_judged"] = timed and items >= INDEX_ITEMS
    out["ok"] = out["top200_overlap"] >= MIN_OVERLAP and (not out["latency_judged"] or out["p50_ms"] < TARGET_MS)
    return out


def tests_check(tmp: Path, tests: Path = ROOT / "tests") -> dict:
    """The README's test command (pytest over ``tests``), counted from its JUnit XML."""
    xml = tmp / "junit.xml"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(xml),
                        str(tests)], cwd=ROOT, capture_output=True, text=True)
    res = junit(xml)
    res.update(minutes=round((time.perf_counter() - t0) / 60, 1), exit_code=p.returncode,
               summary=(p.stdout.strip().splitlines() or [""])[-1])  # pytest's own closing line
    res["ok"] = p.returncode == 0 and not res["failed"] and res["passed"] > 0
    return res


def markdown(res: dict) -> str:
    e, i, t = res["encoder"], res["index"], res.get("tests")

    def yes(ok):
        return "yes" if ok else "**no**"
    L = [f"# CPU class check: {e['profile_detected']}", "", machine_markdown(res["machine"]), "",
         f"Command: `{res['command']}`; bundle `{res['bundle']}`.", "",
         *([f"Emulated core ({EMULATED_ENV}={res['emulated']}): the quality and overlap are that CPU class's arithmetic; "
            "the times are emulation's and are not judged.", ""] if res.get("emulated") else []),
         "## Encoder variant (the bundle scored on this CPU's kernels vs its float teacher)", "",
         f"Profile `{e['profile']}` loads variant `{e['variant']}`. Kept = bundle / teacher nDCG@10, read as the export "
         "gate reads it (cold: the lower of with and without the item with the most positives) and held to the gate's "
         "floors; `at export`: what the gate measured on the machine that wrote the bundle.", "",
         "| held-out users | teacher nDCG@10 | bundle nDCG@10 | bundle / teacher | bundle - teacher, 95% CI | users |",
         "|---|---|---|---|---|---|"]
    names = {"warm": "warm validation", "cold": "cold-validation (new items)", "cold_wo_top1": "cold-validation without "}
    for k, r in e["rows"].items():
        name = names[k] + (", ".join(d["title"] for d in r["without"]) if k == "cold_wo_top1" else "")
        L.append(f"| {name} | {r['teacher']:.4f} | {r['bundle']:.4f} | {r['kept']:.1%} | "
                 f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | {r['users']} |")
    L += ["", "| kept | here | at export | floor | here >= floor |", "|---|---|---|---|---|"]
    for k in e["kept"]:
        ex = e["at_export"].get(k)
        L.append(f"| {k} | {e['kept'][k]:.1%} | {'-' if ex is None else f'{ex:.1%}'} | {e['floors'][k]:.0%} | "
                 f"{yes(e['kept'][k] >= e['floors'][k])} |")
    L += ["", f"## Catalog index ({i['items']:,} items, one thread, history 50, MMR top-10)", "",
          f"The index the detected profile builds: `{i['index']}`.", "",
          "| index p50 ms | p99 ms | content scan p50 ms | float32 p50 ms | top-200 overlap with float32 | "
          "max abs error | target |", "|---|---|---|---|---|---|---|",
          f"| **{i['p50_ms']:.3f}** | {i['p99_ms']:.3f} | {i['content_p50_ms']:.3f} | {i['fp32_p50_ms']:.3f} | "
          f"{i['top200_overlap']:.3f} | {i['max_abs_diff']:.4f} | "
          + (f"< {TARGET_MS:g} ms, >= {MIN_OVERLAP}: {yes(i['ok'])} |" if i["latency_judged"]
             else f">= {MIN_OVERLAP}: {yes(i['ok'])} (" + ("emulated: times not judged" if res.get("emulated")
                                                           else f"latency target at {INDEX_ITEMS:,} items") + ") |")]
    if t is not None:
        L += ["", "## Test suite (`pytest tests`, the README's test command)", "",
              f"{t['passed']} passed, {len(t['failed'])} failed, {t['skipped']} skipped in {t['minutes']} min "
              f"(exit {t['exit_code']}).", ""]
        L += [f"- skipped {n} x {why or '(no reason given)'}" for why, n in t["skip_reasons"].items()]
        L += [f"- failed `{f['test']}`: {f['message']}" for f in t["failed"]]
    L += ["", f"Overall: {'PASS' if res['ok'] else 'FAIL'}.", ""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/quickstart", help="make demo's folder: teacher/ and bundle/")
    ap.add_argument("--items", type=int, default=INDEX_ITEMS, help="catalog size of the index check")
    ap.add_argument("--tests", action="store_true", help="also run the test suite (about 7 minutes here)")
    ap.add_argument("--name", default=None, help="report name (default cpu-class-<detected profile>)")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = Path(a.work)
    missing = [p for p in ("bundle/manifest.json", "teacher/config.toml") if not (work / p).is_file()]
    if missing:
        ap.error(f"--work {work}: no {' or '.join(missing)} there; `make demo` writes runs/quickstart "
                 "(teacher/ and bundle/)")
    if a.items < 1000:
        ap.error(f"--items must be at least 1000, got {a.items}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = {"machine": machine(), "bundle": str(work / "bundle"), "emulated": os.environ.get(EMULATED_ENV) or None,
           "command": "python benchmarks/cpu_class_check.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    with tempfile.TemporaryDirectory() as tmp:
        log.info("encoder variant: the bundle vs its teacher on this CPU ...")
        res["encoder"] = encoder_check(work)
        log.info("catalog index at %d items ...", a.items)
        res["index"] = index_check(work, a.items, Path(tmp), timed=not res["emulated"])
        if a.tests:
            log.info("the test suite ...")
            res["tests"] = tests_check(Path(tmp))
    res["ok"] = all(res[k]["ok"] for k in ("encoder", "index", "tests") if k in res)
    from genre_edge.bench.report import write_results

    name = f"cpu-class-{res['encoder']['profile_detected']}" + (f"-emulated-{res['emulated'].lower()}" if res["emulated"] else "")
    write_results(a.out, a.name or name, res, markdown(res))
    print(markdown(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
