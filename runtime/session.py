"""ONNX Runtime sessions configured from a device profile, with provider fallback."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .profile import DeviceProfile, expand

log = logging.getLogger(__name__)

_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}


def cache_dir() -> Path:
    return Path(os.environ.get("GENRE_CACHE_DIR", Path.home() / ".cache" / "genre-edge"))


def providers_for(profile: DeviceProfile) -> list:
    """The profile's providers that this onnxruntime build has, in order; logs each fallback."""
    from .ortload import onnxruntime

    ort = onnxruntime()

    have = set(ort.get_available_providers())
    out = []
    for p in profile.providers:
        if p.name not in have:
            log.warning("profile %s asks for %s, which this onnxruntime lacks; falling back", profile.name, p.name)
            continue
        opts = {k: (expand(v) if isinstance(v, str) and v.startswith("~") else v) for k, v in p.options.items()}
        out.append((p.name, {k: str(v) if isinstance(v, bool) else v for k, v in opts.items()}) if opts else p.name)
    return out or ["CPUExecutionProvider"]


def make_session(model_path: str | Path, profile: DeviceProfile, sha256: str | None = None, variant: str = ""):
    """An InferenceSession for ``model_path`` set up as ``profile`` says.

    With ``optimized_model_cache`` the graph optimized for this machine is saved once, keyed by
    the model's sha256 and the onnxruntime version, so later starts skip optimization.
    """
    from .ortload import onnxruntime

    ort = onnxruntime()

    so = ort.SessionOptions()
    so.intra_op_num_threads = profile.threads.intra_op
    so.inter_op_num_threads = profile.threads.inter_op
    so.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL if profile.session.execution_mode == "sequential"
                         else ort.ExecutionMode.ORT_PARALLEL)
    so.enable_cpu_mem_arena = profile.session.memory_arena
    so.log_severity_level = 3
    if not profile.session.allow_spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    level = getattr(ort.GraphOptimizationLevel, _GRAPH_OPT[profile.session.graph_optimization])
    so.graph_optimization_level = level
    path = str(model_path)
    providers = providers_for(profile)
    cpu_only = all((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider" for p in providers)
    if profile.session.optimized_model_cache and sha256 and cpu_only:
        # keyed by machine too: an optimized graph may hold kernels chosen for this CPU (shared home folders)
        import platform

        cached = cache_dir() / "ort" / (f"{sha256[:24]}-ort{ort.__version__}-{platform.machine()}-"
                                        f"{profile.session.graph_optimization}.onnx")
        if cached.is_file():
            path = str(cached)
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        else:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                so.optimized_model_filepath = str(cached) + f".{os.getpid()}.tmp"
            except OSError as exc:  # read-only home on an appliance: just don't cache
                log.info("optimized-model cache disabled: %s", exc)
                cached = None
    else:
        cached = None
    try:
        sess = ort.InferenceSession(path, so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        from .errors import BundleError

        raise BundleError(f"{model_path}: onnxruntime cannot load this model ({exc})") from None
    if cached is not None and path != str(cached):
        tmp = Path(str(cached) + f".{os.getpid()}.tmp")
        if tmp.is_file():
            os.replace(tmp, cached)  # atomic: a half-written cache is never picked up
    used = sess.get_providers()
    if used[0] != (providers[0] if isinstance(providers[0], str) else providers[0][0]):
        log.warning("profile %s: %s unavailable at run time; using %s", profile.name, providers[0], used[0])
    return sess
