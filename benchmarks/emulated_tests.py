"""The test suite on emulated CPUs: the runtime's tests on Raspberry Pi cores, the whole suite on an AVX2-only x86 core.

    python benchmarks/emulated_tests.py                        (make test-emulated: Cortex-A72 and Cortex-A76)
    python benchmarks/emulated_tests.py --cores Haswell        (the whole suite, x86 with AVX2 but no AVX-512/VNNI)

Why: ``make test`` runs on this machine's CPU class only, and the runtime's arithmetic differs by class (ONNX
Runtime's int8 kernels: VNNI, AVX2's saturating vpmaddubsw, NEON with or without dot-product; the 7-bit query path
of the catalog index; the profile ``auto`` picks). ``arm64_parity.py`` compares one bundle's answers across
classes; this runs the tests themselves there, under QEMU user emulation (``arm64/setup.sh`` makes the
environment: correctness, not timing).

- **Cortex-A72 / Cortex-A76** (Raspberry Pi 4 / 5): an arm64 Debian Python with the runtime's dependencies and the
  test tools as aarch64 wheels (same versions as this machine's venv; no torch: a device has none). Runs every test
  module that imports nothing of the training side at its top (the runtime's modules; tests inside them that need
  the export side skip with their reason). The tiny bundle those tests use is built here, natively, by the same
  code as the fixture (``conftest.build_tiny_root``), and handed over as ``GENRE_TEST_TINY_ROOT``.
- **Haswell**: this machine's own venv on the emulated x86 core: every test module, as ``make test`` runs them
  (7x slower than natively or more; the end-to-end test, real MiniLM training, takes well over 25 minutes there:
  ``-k "not test_real_teacher_on_ml100k_slice"`` leaves it out).

Child processes the tests start (``sys.executable``: a server, a writer killed mid-write) run on the emulated core
too: ``sys.executable`` is a small script that starts QEMU again (QEMU's ``-0`` sets it). Writes
``emulated-tests-<cores>.{json,md}`` (per core: passed, failed, skipped with reasons, minutes) to ``--out``; exits
1 if any test fails.
"""
from __future__ import annotations

import argparse
import ast
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arm64_parity import runtime_tree  # noqa: E402

from genre_edge.bench.machine import machine, machine_markdown  # noqa: E402

log = logging.getLogger("emulated_tests")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TESTS = ROOT / "tests"
# QEMU -cpu model -> (machine, what runs there); never "max": it offers every ISA extension and hides dispatch bugs
CORES = {"cortex-a72": ("aarch64", "runtime"), "cortex-a76": ("aarch64", "runtime"), "Haswell": ("x86_64", "all")}
# a module importing any of these at its top belongs to the training side (or needs its heavy stack)
TRAINING_SIDE = {"genre_edge_export", "torch", "transformers", "onnx", "optimum"}
# test tools and the server's dependencies, as aarch64 wheels at this venv's versions (faiss-cpu: the runtime's
# ann extra; cryptography: bundle signatures; schemathesis: the HTTP API fuzzer; onnx: checks the graphs the
# runtime writes itself)
TEST_PACKAGES = ("pytest", "hypothesis", "fastapi", "uvicorn", "httptools", "uvloop", "httpx", "threadpoolctl",
                 "cryptography", "faiss-cpu", "schemathesis", "onnx")


def runtime_test_modules(tests: Path = TESTS) -> list[Path]:
    """The test modules that import nothing of the training side at their top level (module body, including
    ``try`` blocks) and are not marked whole as needing the export extra: what a runtime-only environment can
    collect and run."""
    out = []
    for f in sorted(tests.glob("test_*.py")):
        tree = ast.parse(f.read_text(), str(f))
        stmts = list(tree.body)
        for s in tree.body:
            if isinstance(s, ast.Try):
                stmts += s.body
        names = set()
        for s in stmts:
            if isinstance(s, ast.Import):
                names |= {a.name.split(".")[0] for a in s.names}
            elif isinstance(s, ast.ImportFrom) and s.module and not s.level:
                names.add(s.module.split(".")[0])
        # a module marked whole as needing the export extra tests the training side
        marked = any(isinstance(s, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in s.targets)
                     and "have_export()" in ast.unparse(s.value) for s in tree.body)
        if not names & TRAINING_SIDE and not marked:
            out.append(f)
    return out


def test_site(env_dir: Path) -> Path:
    """aarch64 wheels of :data:`TEST_PACKAGES` at this venv's versions (with their dependencies) in
    ``env_dir/site-tests``; reused while the versions are the same."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for p in TEST_PACKAGES:
        try:
            reqs.append(f"{p}=={version(p)}")
        except PackageNotFoundError:
            log.warning("%s is not installed here: its tests will skip under emulation", p)
    site, stamp = env_dir / "site-tests", " ".join(reqs)
    if (site / ".done").is_file() and (site / ".done").read_text() == stamp:
        return site
    shutil.rmtree(site, ignore_errors=True)
    tmp = env_dir / "site-tests.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("aarch64 wheels for the tests: %s", stamp)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(tmp), "--platform",
                    "manylinux_2_28_aarch64", "--platform", "manylinux_2_17_aarch64", "--platform",
                    "manylinux2014_aarch64", "--platform", "linux_aarch64", "--only-binary=:all:", "--python-version",
                    "3.11", "--implementation", "cp", *reqs], check=True)
    (tmp / ".done").write_text(stamp)
    tmp.rename(site)
    return site


def build_tiny(dst: Path) -> Path:
    """The tests' tiny root (toy data, teacher, student, bundles), built natively by the fixture's own code."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from conftest import build_tiny_root, write_generic; r = Path(sys.argv[2]); "
            "build_tiny_root(r, write_generic(r / 'toy'))")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, "-c", code, str(TESTS), str(dst)], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"building the tiny bundle failed (it needs the export extra: make install):\n{p.stderr[-3000:]}")
    return dst


def python_shim(tmp: Path, qemu: Path, core: str, python: Path, sysroot: Path | None) -> Path:
    """A script that runs ``python`` under ``qemu -cpu core`` and is the emulated Python's ``sys.executable``
    (QEMU's ``-0``), so the tests' child processes run emulated too. For a venv's Python (x86), the script sits in
    a folder laid out as the venv (its pyvenv.cfg, its lib/), so that Python finds the venv's packages."""
    home = tmp / f"python-{core}"
    (home / "bin").mkdir(parents=True)
    venv = python.parent.parent
    if (venv / "pyvenv.cfg").is_file():
        shutil.copy(venv / "pyvenv.cfg", home / "pyvenv.cfg")
        (home / "lib").symlink_to(venv / "lib")
        if (venv / "bin" / "genre").is_file():  # the console script next to sys.executable (it runs natively)
            (home / "bin" / "genre").symlink_to(venv / "bin" / "genre")
    shim = home / "bin" / "python"
    sys_root = f' -L "{sysroot}"' if sysroot else ""
    shim.write_text(f'#!/bin/sh\nexec "{qemu}" -cpu {core}{sys_root} -0 "$0" "{python}" "$@"\n')
    shim.chmod(0o755)
    return shim


# set in every emulated run: what reads it (cpu_class_check.py, a test) knows its times are emulation's
EMULATED_ENV = "GENRE_EMULATED_CORE"


def junit(path: Path) -> dict:
    """Counts, failures and skip reasons from pytest's JUnit XML (all zero where pytest wrote none)."""
    if not path.is_file():
        return {"tests": 0, "failed": [], "skipped": 0, "passed": 0, "skip_reasons": {}}
    cases = list(ET.parse(path).getroot().iter("testcase"))
    failed, skipped = [], Counter()
    for c in cases:
        name = f"{c.get('classname', '')}::{c.get('name', '')}"
        bad = c.find("failure") if c.find("failure") is not None else c.find("error")
        if bad is not None:
            failed.append({"test": name, "message": (bad.get("message") or "")[:300]})
        elif c.find("skipped") is not None:
            skipped[(c.find("skipped").get("message") or "").strip()[:160]] += 1
    return {"tests": len(cases), "failed": failed, "skipped": sum(skipped.values()),
            "passed": len(cases) - len(failed) - sum(skipped.values()),
            "skip_reasons": dict(skipped.most_common())}


def run_core(core: str, env_dir: Path, tmp: Path, tiny: Path | None, select: str | None, timeout: int) -> dict:
    arch, what = CORES[core]
    qemu = env_dir / "qemu" / "usr" / "bin" / ("qemu-aarch64" if arch == "aarch64" else "qemu-x86_64")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1", GENRE_CACHE_DIR=str(tmp / f"cache-{core}"),
               **{EMULATED_ENV: core})  # (a test of this script's own shim skips: it would wrap a shim)
    if what == "runtime":
        src = runtime_tree(tmp / "src") if not (tmp / "src").is_dir() else tmp / "src"
        site_tests = test_site(env_dir)
        env["PYTHONPATH"] = f"{src}:{env_dir / 'site'}:{site_tests}"
        env["GENRE_TEST_TINY_ROOT"] = str(tiny)
        shim = python_shim(tmp, qemu, core, env_dir / "root" / "usr" / "bin" / "python3.11", env_dir / "root")
        modules = runtime_test_modules()
    else:  # this machine's venv, every module (the tiny bundle is built in the fixture, emulated)
        env.pop("PYTHONPATH", None)
        env.pop("GENRE_TEST_TINY_ROOT", None)
        shim = python_shim(tmp, qemu, core, Path(sys.executable), None)
        modules = sorted(TESTS.glob("test_*.py"))
    xml = tmp / f"junit-{core}.xml"
    cmd = [str(shim), "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "--basetemp", str(tmp / f"pt-{core}"),
           "--junitxml", str(xml), *(["-k", select] if select else []), *map(str, modules)]
    log.info("%s (%s, %d test modules) ...", core, arch, len(modules))
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        rc, tail = p.returncode, (p.stdout + p.stderr)[-4000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = 124, f"timed out after {timeout} s\n" + ((e.stdout or b"")[-3000:].decode(errors="replace")
                                                             if isinstance(e.stdout, bytes) else str(e.stdout or "")[-3000:])
    minutes = (time.perf_counter() - t) / 60
    res = {"arch": arch, "modules": [m.name for m in modules], "minutes": round(minutes, 1), "rc": rc}
    res.update(junit(xml))
    probe = subprocess.run([str(shim), "-c", "import platform, onnxruntime, sys; "
                            "print(platform.machine(), sys.version.split()[0], onnxruntime.__version__)"],
                           env=env, capture_output=True, text=True, timeout=600)
    res["python_machine"], res["python"], res["onnxruntime"] = (probe.stdout.split() + ["?"] * 3)[:3]
    # what the emulated Python's `genre profile detect` says: the core asked for, not this machine's
    res["profile_detected"] = subprocess.run(
        [str(shim), "-c", "from genre_edge.profile import detect; print(detect().name)"], env=env,
        capture_output=True, text=True, timeout=600).stdout.strip() or "?"
    res["ok"] = rc == 0 and not res["failed"] and res["tests"] > 0
    if not res["ok"]:
        res["output_tail"] = tail
    log.info("%s: %d passed, %d failed, %d skipped in %.1f min (profile detected: %s)", core, res["passed"],
             len(res["failed"]), res["skipped"], minutes, res["profile_detected"])
    return res


def markdown(res: dict) -> str:
    L = ["# The test suite on emulated CPUs (QEMU user emulation)", "",
         "Host: " + machine_markdown(res["machine"]), "", f"Command: `{res['command']}`; {res['qemu']}.", "",
         "Raspberry Pi cores run the runtime's test modules (no training-side import at their top) in an arm64 "
         "Debian Python with the runtime's dependencies as aarch64 wheels, no torch, and the tiny test bundle built "
         "natively by the fixture's own code; Haswell (x86, AVX2 without AVX-512/VNNI) runs every module in this "
         "machine's venv. Child processes run emulated too. Correctness, not timing.", "",
         "| core | Python / onnxruntime | profile detected | modules | passed | failed | skipped | minutes | pass |",
         "|---|---|---|---|---|---|---|---|---|"]
    for core, r in res["cores"].items():
        L.append(f"| {core} ({r['python_machine']}) | {r['python']} / {r['onnxruntime']} | {r['profile_detected']} | "
                 f"{len(r['modules'])} | {r['passed']} | {len(r['failed'])} | {r['skipped']} | {r['minutes']} | "
                 f"{'yes' if r['ok'] else '**no**'} |")
    for core, r in res["cores"].items():
        L += ["", f"## {core}: skipped, with the reasons", ""]
        L += [f"- {n} x {why or '(no reason given)'}" for why, n in r["skip_reasons"].items()] or ["- none"]
        if r["failed"]:
            L += ["", f"Failed on {core}:", ""] + [f"- `{f['test']}`: {f['message']}" for f in r["failed"]]
    L += ["", f"Overall: {'PASS' if res['ok'] else 'FAIL'}.", ""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", default="cortex-a72,cortex-a76", help=f"QEMU -cpu models: {', '.join(CORES)}")
    ap.add_argument("--env", default=os.environ.get("GENRE_ARM64_DIR", str(Path.home() / ".cache/genre-edge/arm64")),
                    help="emulation environment folder (made by arm64/setup.sh)")
    ap.add_argument("--no-setup", action="store_true", help="do not run arm64/setup.sh first")
    ap.add_argument("-k", dest="select", default=None, help="pytest -k expression (a subset, for a quick look)")
    ap.add_argument("--timeout-min", type=float, default=120, help="per core (default 120 minutes)")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cores = [c.strip() for c in a.cores.split(",") if c.strip()]
    bad = [c for c in cores if c not in CORES]
    if bad or not cores:
        ap.error(f"--cores: unknown {bad}; choose from {', '.join(CORES)} (never 'max': it hides ISA bugs)")
    env_dir = Path(a.env)
    if not a.no_setup:
        subprocess.run(["bash", str(HERE / "arm64" / "setup.sh"), str(env_dir), sys.executable], check=True)
    need = {f"qemu-{CORES[c][0]}" for c in cores}
    missing = [q for q in need if not (env_dir / "qemu" / "usr" / "bin" / q).is_file()]
    if missing or (any(CORES[c][0] == "aarch64" for c in cores)
                   and not (env_dir / "root" / "usr" / "bin" / "python3.11").is_file()):
        raise SystemExit(f"{env_dir}: no emulation environment ({', '.join(missing) or 'arm64 Python'} missing); "
                         f"run benchmarks/arm64/setup.sh {env_dir}")
    res = {"machine": machine(), "command": "python benchmarks/emulated_tests.py "
           + " ".join(argv if argv is not None else sys.argv[1:]), "cores": {}}
    qemus = sorted(need)
    res["qemu"] = ", ".join(subprocess.run([str(env_dir / "qemu" / "usr" / "bin" / q), "--version"], capture_output=True,
                                           text=True).stdout.splitlines()[0] for q in qemus)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = None
        if any(CORES[c][1] == "runtime" for c in cores):
            log.info("building the tiny test bundle natively ...")
            tiny = build_tiny(tmp / "tiny")
        for core in cores:
            res["cores"][core] = run_core(core, env_dir, tmp, tiny, a.select, int(a.timeout_min * 60))
    res["ok"] = all(r["ok"] for r in res["cores"].values())
    from genre_edge.bench.report import write_results

    write_results(a.out, "emulated-tests-" + "-".join(c.lower() for c in cores), res, markdown(res))
    print(markdown(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
