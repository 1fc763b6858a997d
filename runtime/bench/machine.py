"""What machine and software produced a benchmark number (recorded with every result)."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
from pathlib import Path

# The checkout this runtime was imported from (an editable install); elsewhere, or without git, "unknown".
ROOT = Path(__file__).resolve().parents[2]
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "fphp", "sve")


def git_sha() -> str:
    """HEAD of the checkout, with ``-dirty`` when tracked files differ (so numbers can be traced).

    ``GENRE_GIT_SHA`` names it where the code runs from a copy without ``.git`` (a tree sent to another
    machine to measure there)."""
    if os.environ.get("GENRE_GIT_SHA"):
        return os.environ["GENRE_GIT_SHA"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def gpus() -> list[str]:
    """The NVIDIA GPUs ``nvidia-smi`` lists ("name, driver"), none where it is missing or fails: a GPU number
    without the GPU it ran on cannot be compared."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """CPU model and the flags that matter for int8/fp16 kernels, from the profile module's /proc/cpuinfo reader."""
    from ..profile import machine_info

    info = machine_info()
    return info.model or platform.processor() or "unknown", sorted(f for f in FLAGS_OF_INTEREST if f in info.cpu_flags)


def machine() -> dict:
    """CPU, flags, cores, library versions, git sha and time of the run."""
    import numpy as np
    from ..ortload import onnxruntime

    ort = onnxruntime()

    model, flags = cpu_model_and_flags()
    return {
        "cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "arch": platform.machine(),
        "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "onnxruntime": ort.__version__, "gpus": gpus(), "git": git_sha(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def machine_markdown(m: dict) -> str:
    gpu = f"; GPU: {' | '.join(m['gpus'])}" if m.get("gpus") else ""
    return (f"Machine: {m['cpu']} ({m['arch']}, {m['cores']} cores, flags: {', '.join(m['cpu_flags']) or 'none'}{gpu}); "
            f"onnxruntime {m['onnxruntime']}, numpy {m['numpy']}, Python {m['python']}; git {m['git']}; {m['date']}.")
