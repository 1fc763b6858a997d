"""CPU-class parity: the runtime and a bundle's CPU variants under QEMU user emulation vs this machine.

For each emulated core (Cortex-A72 = Raspberry Pi 4, Cortex-A76 = Raspberry Pi 5, and Haswell = an
x86 core with AVX2 but no AVX-512/VNNI, where ONNX Runtime's u8 x s8 kernel is vpmaddubsw; never
``-cpu max``, which offers every ISA extension and hides dispatch bugs), ``arm64/probe.py`` loads the
bundle with that board's profile and records, for every CPU encoder variant: embeddings of fixed
texts, and top-10 recommendations (ids and scores) for fixed histories, with and without a query,
through both catalog-scoring paths (numpy float32 and the int8 MatMulInteger index). The same
probe runs natively; embeddings and scores must agree within float tolerance, ids exactly.
Timings under emulation mean nothing; correctness does.

    python benchmarks/arm64_parity.py --bundle runs/quickstart/bundle     (make test-arm64)
    python benchmarks/arm64_parity.py --bundle B --cores Haswell --name x86-avx2-parity   (make test-x86-avx2)

Under x86 emulation this machine's own Python and packages run on the emulated core (the runtime
picks the x86-avx2 profile there: CPUID says AVX2 only). A bundle that carries the 7-bit
``int8-avx2`` variant (``genre export --profile x86-avx2``) is the one to check.
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
import time
from pathlib import Path

import numpy as np

from genre_edge.bench.machine import machine, machine_markdown

log = logging.getLogger("arm64_parity")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORES = {"cortex-a72": "rpi4", "cortex-a76": "rpi5", "Haswell": "x86-avx2"}
MACHINE = {"cortex-a72": "aarch64", "cortex-a76": "aarch64", "Haswell": "x86_64"}
FULL_RANGE_INT8 = ("int8-avx512vnni", "int8-arm64")  # 8-bit weights: exact with VNNI / NEON dot products only
COS_MIN = 0.999  # embeddings: cosine to the native result
SCORE_TOL = 2e-3  # recommendation scores: absolute


def runtime_tree(dst: Path) -> Path:
    """The runtime as the arm64 Python imports it: genre_edge/ with its device profiles (no install)."""
    pkg = dst / "genre_edge"
    shutil.copytree(ROOT / "runtime", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "device_profiles", pkg / "device_profiles", ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def run_probe(cmd: list[str], env: dict, timeout: int = 1800) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"probe failed (exit {p.returncode}): {' '.join(cmd[:4])} ...\n{p.stderr[-3000:]}")
    return time.perf_counter() - t


def compare(ref: dict, got: dict) -> dict:
    out = {}
    for v, r in ref["variants"].items():
        g = got["variants"].get(v)
        if g is None:
            out[v] = {"ok": False, "error": "variant missing under emulation"}
            continue
        a, b = np.asarray(r["embeddings"]), np.asarray(g["embeddings"])
        if "query_embeddings" in r and "query_embeddings" in g:  # the request's query, embedded alone
            a, b = np.concatenate([a, r["query_embeddings"]]), np.concatenate([b, g["query_embeddings"]])
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        # the index as each CPU builds it is compared only where both quantize queries alike (an x86 core
        # without VNNI uses 7-bit queries by design); the 7-bit index and float32 everywhere
        same_index = ref.get("index_7bit") == got.get("index_7bit")
        pairs = [(x, y) for x, y in zip(r["recs"], g["recs"]) if x.get("mode") != "int8" or same_index]
        # Lists with a free-text query depend on the query's embedding, made at request time from one short
        # text. Through an int8 encoder it is not bit-identical across CPU classes: dynamic quantization
        # rounds each activation tensor to a range of its own, and the float kernels between (exp, erf,
        # layer norm) differ by an ulp between ISAs, which sometimes moves a value across a rounding step.
        # The difference stays within int8's own noise (demo bundle: cosine 0.99966 Cortex-A72 vs x86; the
        # same text embedded alone vs in a batch on one machine: 0.9976), so such lists must rank the same
        # top-10 items, in an order that may differ; their embedding is held to the cosine bound above.
        # Everything else (no query, or a float encoder) must match exactly: ids, and scores within tolerance.
        lenient = v.startswith("int8")
        strict = [(x, y) for x, y in pairs if not (lenient and x.get("query"))]
        loose = [(x, y) for x, y in pairs if lenient and x.get("query")]
        ids_same = sum(x["ids"] == y["ids"] for x, y in pairs)
        same_set = sum(sorted(x["ids"]) == sorted(y["ids"]) for x, y in loose)
        score_diff = max((float(np.abs(np.asarray(x["scores"]) - np.asarray(y["scores"])).max())
                          for x, y in strict if x["ids"] == y["ids"] and x["scores"]), default=0.0)
        query_diff = max((float(np.abs(np.sort(x["scores"]) - np.sort(y["scores"])).max())
                          for x, y in loose if x["scores"] and len(x["scores"]) == len(y["scores"])), default=0.0)
        out[v] = {"emb_max_abs_diff": float(np.abs(a - b).max()), "emb_cos_min": float(cos.min()),
                  "recs_ids_identical": ids_same, "recs": len(pairs), "score_max_abs_diff": score_diff,
                  "query_recs": len(loose), "query_recs_same_set": same_set, "query_score_max_abs_diff": query_diff}
        if not same_index:  # for the record: each CPU's own index, top-10 ids in common
            own = [(x, y) for x, y in zip(r["recs"], g["recs"]) if x.get("mode") == "int8"]
            out[v]["own_index_top10_overlap"] = float(np.mean([len(set(x["ids"]) & set(y["ids"])) / max(1, len(x["ids"]))
                                                               for x, y in own])) if own else None
        out[v]["ok"] = bool(cos.min() >= COS_MIN and len(r["recs"]) == len(g["recs"]) and score_diff <= SCORE_TOL
                            and all(x["ids"] == y["ids"] for x, y in strict) and same_set == len(loose))
        if got.get("index_7bit") and v in FULL_RANGE_INT8:
            # full-range int8 weights on a core whose u8 x s8 kernel saturates: the drift the 7-bit int8-avx2
            # variant exists for (the x86-avx2 profile picks that one; the runtime warns if it must fall back)
            out[v]["expected_drift"] = True
    return out


def peer_references(res: dict, emulated: dict[str, dict]) -> None:
    """On a host whose u8 x s8 kernel saturates (x86 without VNNI), this machine cannot compute a full-range int8
    file exactly, so it is no reference for the Pi cores that run one: there, each Pi core's full-range variants
    are compared with another emulated Pi core's instead (NEON with and without dot-product: both exact). With a
    single Pi core they stay unchecked, said so, and do not count as a failure (the run needs one check passed)."""
    if not res.get("host_saturates"):
        return
    pis = [c for c in emulated if MACHINE[c] == "aarch64"]
    for core in pis:
        peer = next((c for c in pis if c != core), None)
        for v in FULL_RANGE_INT8:
            if v not in res["cores"][core]["variants"]:
                continue
            if peer is None or v not in emulated[peer]["variants"]:
                res["cores"][core]["variants"][v] = {
                    "ok": False, "unchecked": True,
                    "error": "unchecked: this host's u8 x s8 kernel saturates full-range int8, so it is no reference; "
                             "run two Pi cores (--cores cortex-a72,cortex-a76) to check them against each other"}
                continue
            pick = lambda r: {"variants": {v: r["variants"][v]}, "index_7bit": r.get("index_7bit")}  # noqa: E731
            c = compare(pick(emulated[peer]), pick(emulated[core]))[v]
            c["reference"] = f"{peer} (emulated)"
            res["cores"][core]["variants"][v] = c


def markdown(res: dict) -> str:
    x86 = all(MACHINE[c] == "x86_64" for c in res["cores"])
    L = [f"# {'x86 AVX2' if x86 else 'arm64'} parity under QEMU user emulation", "",
         "Host: " + machine_markdown(res["machine"])
         + (f" **This host is itself emulated** (QEMU -cpu {res['host_emulated']}, `--host-core`; the flags are what the "
            "emulated core offers): the native reference ran there." if res.get("host_emulated") else ""), "",
         f"Command: `{res['command']}`", "",
         f"Emulator: {res['qemu']}; " + (f"this machine's Python and onnxruntime {res['arm_onnxruntime']} on the emulated "
                                         "core (CPUID: AVX2, no AVX-512/VNNI). Bundle " if x86 else
                                         f"arm64 Python {res['arm_python']}, onnxruntime {res['arm_onnxruntime']} "
                                         "(aarch64 wheels, same versions as the host). Bundle ") +
         f"`{res['bundle']}`. Pass: embedding cosine >= {COS_MIN} (catalog texts, and the query embedded alone as a "
         f"request embeds it), top-10 ids identical and scores within {SCORE_TOL}; for lists with a free-text query "
         "through an int8 encoder, the same top-10 items in an order that may differ (the query's int8 embedding is not "
         "bit-identical across CPU classes: see `compare`). "
         f"{res['n_recs']} recommendation lists per variant (5 histories of 1-50 items, with and without a query; "
         "catalog scored by numpy float32, by the int8 index as each CPU builds it, and by the int8 index with 7-bit "
         "queries). The index as each CPU builds it is compared only between CPUs that quantize queries alike: an x86 "
         "core without VNNI uses 7-bit queries (its u8 x s8 kernel would saturate at 8 bits); its own-index top-10 "
         "overlap with this machine's is given for the record.", "",
         "| core (profile) | variant | emb max abs diff | emb cos min | top-10 ids identical | score max abs diff | "
         "query lists: same top-10 set | query score max abs diff | pass | emulated run s |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for core, r in res["cores"].items():
        for v, c in r["variants"].items():
            if "error" in c:
                L.append(f"| {core} ({r['profile']}) | {v} | - | - | - | - | - | - | "
                         f"{c['error'] if c.get('unchecked') else '**no**: ' + c['error']} | |")
                continue
            own = c.get("own_index_top10_overlap")
            L.append(f"| {core} ({r['profile']}) | {v} | {c['emb_max_abs_diff']:.2e} | {c['emb_cos_min']:.6f} | "
                     f"{c['recs_ids_identical']}/{c['recs']}" + (f" (own index: {own:.2f} overlap)" if own is not None
                                                                else "") +
                     f" | {c['score_max_abs_diff']:.2e} | "
                     + (f"{c['query_recs_same_set']}/{c['query_recs']} | {c['query_score_max_abs_diff']:.2e} | "
                        if c.get("query_recs") else "- (held to the exact rule) | - | ")
                     + ((f"yes, vs {c['reference']}" if c.get("reference") else "yes") if c["ok"]
                        else "drifts, as expected: not this core's variant" if c.get("expected_drift")
                        else "**no**") + f" | {r['seconds']:.0f} |")
    L += ["", "int8 catalog scoring vs float32 at 100k items (the catalog grown with rows + noise, as scale_curve.py "
          "does), each CPU's own index: top-200 overlap, mean (min) over 20 user vectors of random 50-item histories; "
          "as a request scores (the int8 pass, then its best rows again exactly) and the int8 pass alone:", "",
          "| core | this machine | emulated core | this machine, int8 pass alone | emulated core, int8 pass alone |",
          "|---|---|---|---|---|"]
    for core, r in res["cores"].items():
        o = r.get("index_overlap") or {}
        cell = lambda x, p="": (f"{x[p + 'overlap_mean']:.3f} ({x[p + 'overlap_min']:.3f})"  # noqa: E731
                                if x and p + "overlap_mean" in x else "-")
        L.append(f"| {core} | {cell(o.get('native'), 'top_k_')} | {cell(o.get('emulated'), 'top_k_')} | "
                 f"{cell(o.get('native'), 'index_only_')} | {cell(o.get('emulated'), 'index_only_')} |")
    if res.get("host_saturates") and not x86:
        L += ["", "This host's u8 x s8 kernel saturates (x86 without VNNI), so it cannot compute the full-range int8 "
              f"files ({', '.join(FULL_RANGE_INT8)}) exactly: the Pi cores' results for them are compared with each "
              "other (\"vs\" in the pass column); every other variant with this host, as above."]
    L += ["", f"Overall: {'PASS' if res['ok'] else 'FAIL'}.", ""]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--env", default=os.environ.get("GENRE_ARM64_DIR", str(Path.home() / ".cache/genre-edge/arm64")),
                    help="emulation environment folder (made by arm64/setup.sh)")
    ap.add_argument("--cores", default="cortex-a72,cortex-a76", help=f"QEMU -cpu models: {', '.join(CORES)}")
    ap.add_argument("--no-setup", action="store_true", help="do not run arm64/setup.sh first")
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--host-core", choices=["Haswell"], default=None,
                    help="run this whole check (its native reference too) on an emulated x86 core: Haswell = a host "
                         "with AVX2 but no AVX-512/VNNI, as make test-arm64 runs on such a machine")
    a = ap.parse_args(argv)
    if a.host_core:  # this script again, on the emulated host core (its children too: the shim is sys.executable)
        from emulated_tests import python_shim

        qemu_x86 = Path(a.env) / "qemu" / "usr" / "bin" / "qemu-x86_64"
        if not a.no_setup:
            subprocess.run(["bash", str(HERE / "arm64" / "setup.sh"), str(a.env), sys.executable], check=True)
        if not qemu_x86.is_file():
            raise SystemExit(f"{a.env}: no qemu-x86_64; run benchmarks/arm64/setup.sh {a.env}")
        rest = list(argv if argv is not None else sys.argv[1:])
        i = rest.index("--host-core") if "--host-core" in rest else None
        rest = rest[:i] + rest[i + 2:] if i is not None else [x for x in rest if not x.startswith("--host-core=")]
        with tempfile.TemporaryDirectory() as tmp:
            shim = python_shim(Path(tmp), qemu_x86, a.host_core, Path(sys.executable), None)
            return subprocess.run([str(shim), str(Path(__file__).resolve()), *rest, "--no-setup"],
                                  env=dict(os.environ, GENRE_EMULATED_HOST=a.host_core)).returncode
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cores = [c.strip() for c in a.cores.split(",") if c.strip()]
    bad = [c for c in cores if c not in CORES]
    if bad or not cores:
        ap.error(f"--cores: unknown {bad}; choose from {', '.join(CORES)} (never 'max': it hides ISA bugs)")
    if not (Path(a.bundle) / "manifest.json").is_file():
        ap.error(f"--bundle {a.bundle}: no manifest.json there (make demo builds runs/quickstart/bundle)")
    env_dir = Path(a.env)
    if not a.no_setup:
        subprocess.run(["bash", str(HERE / "arm64" / "setup.sh"), str(env_dir), sys.executable], check=True)
    qemu = env_dir / "qemu" / "usr" / "bin" / "qemu-aarch64"
    py = env_dir / "root" / "usr" / "bin" / "python3.11"
    if not qemu.is_file() or not py.is_file():
        raise SystemExit(f"{env_dir}: no emulation environment; run benchmarks/arm64/setup.sh {env_dir}")
    bundle = str(Path(a.bundle).resolve())
    probe = str(HERE / "arm64" / "probe.py")
    res = {"machine": machine(), "bundle": Path(bundle).name, "cores": {}, "command": "python benchmarks/arm64_parity.py "
           + " ".join(argv if argv is not None else sys.argv[1:]),
           "host_emulated": os.environ.get("GENRE_EMULATED_HOST"),  # set by --host-core
           "qemu": subprocess.run([str(qemu.with_name("qemu-x86_64") if all(MACHINE[c] == "x86_64" for c in cores)
                                   else qemu), "--version"], capture_output=True, text=True).stdout.splitlines()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = runtime_tree(tmp / "src")
        base_env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        emulated = {}
        for core in cores:
            profile = CORES[core]
            log.info("native reference, profile %s ...", profile)
            ref_p = tmp / f"ref-{profile}.json"
            run_probe([sys.executable, probe, bundle, profile, str(ref_p)],
                      dict(base_env, GENRE_CACHE_DIR=str(tmp / "cache-native")))
            log.info("qemu-aarch64 -cpu %s, profile %s ...", core, profile)
            arm_p = tmp / f"arm-{core}.json"
            arm_env = dict(base_env, PYTHONPATH=f"{src}:{env_dir / 'site'}", GENRE_CACHE_DIR=str(tmp / f"cache-{core}"),
                           PYTHONNOUSERSITE="1")
            if MACHINE[core] == "x86_64":  # this machine's own Python on an emulated x86 core
                x86_env = dict(base_env, PYTHONPATH=str(src), GENRE_CACHE_DIR=str(tmp / f"cache-{core}"))
                secs = run_probe([str(qemu.with_name("qemu-x86_64")), "-cpu", core, sys.executable, probe, bundle,
                                  profile, str(arm_p)], x86_env)
            else:
                secs = run_probe([str(qemu), "-cpu", core, "-L", str(env_dir / "root"), str(py), probe, bundle, profile,
                                  str(arm_p)], arm_env)
            ref, got = json.loads(ref_p.read_text()), json.loads(arm_p.read_text())
            if got["machine"] != MACHINE[core]:
                raise SystemExit(f"the emulated probe reports machine {got['machine']!r}, not {MACHINE[core]}")
            if got.get("profile") != profile:
                raise SystemExit(f"the emulated probe ran profile {got.get('profile')!r}, not {profile}")
            res["arm_python"], res["arm_onnxruntime"] = got["python"], got["onnxruntime"]
            res["n_recs"] = len(next(iter(ref["variants"].values()))["recs"])
            res["cores"][core] = {"profile": profile, "seconds": secs, "variants": compare(ref, got),
                                  "index_overlap": {"native": ref.get("index_overlap"), "emulated": got.get("index_overlap")}}
            res["host_saturates"] = bool(ref.get("index_7bit"))
            emulated[core] = got
        peer_references(res, emulated)
    res["ok"] = all(c["ok"] for r in res["cores"].values() for c in r["variants"].values()
                    if not c.get("expected_drift") and not c.get("unchecked"))
    if not any(c["ok"] for r in res["cores"].values() for c in r["variants"].values()):
        res["ok"] = False  # nothing checked: e.g. an AVX2 core and a bundle without int8-avx2
    from genre_edge.bench.report import write_results

    write_results(a.out, a.name or f"arm64-parity-{Path(bundle).name}", res, markdown(res))
    print(markdown(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
