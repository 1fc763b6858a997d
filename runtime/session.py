"""ONNX Runtime sessions configured from a device profile, with provider fallback."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from . import cache
from .profile import DeviceProfile, expand

log = logging.getLogger(__name__)

_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}


# The shared libraries an execution provider loads at session creation. onnxruntime-gpu lists TensorRT as
# available whenever its provider library is installed, then prints a red ERROR block at every session
# when TensorRT itself is missing; checking the library first turns that into one warning.
_PROVIDER_LIBS = {"TensorrtExecutionProvider": ("libnvinfer.so.10", "libnvinfer.so.8", "nvinfer_10.dll", "nvinfer.dll")}
_warned: set[tuple[str, str]] = set()


def _without_cache(ort, so, level, model_path: Path, providers, cached: Path, from_cache: bool, exc: Exception):
    """The bundle's own model loaded again without the optimized-model cache, after a load that used the cache
    failed: a cache folder that is full or read-only (onnxruntime cannot write the optimized graph; it said
    'Protobuf serialization failed' and the bundle looked broken) or a damaged cached file. Refused as a
    bundle error only when the bundle's model fails too."""
    from .errors import BundleError

    for leftover in (Path(str(cached) + f".{os.getpid()}.tmp"), *((cached,) if from_cache else ())):
        try:
            leftover.unlink(missing_ok=True)
        except OSError:
            pass
    so.optimized_model_filepath = ""
    so.graph_optimization_level = level
    try:
        sess = ort.InferenceSession(str(model_path), so, providers=providers)
    except Exception as again:
        raise BundleError(f"{model_path}: onnxruntime cannot load this model ({again})") from None
    log.warning("%s: optimized-model cache %s (%s); loaded without it", Path(model_path).name,
                "file unreadable, removed" if from_cache else f"not written to {cached.parent}", exc)
    return sess


def _loadable(provider: str) -> bool:
    import ctypes

    libs = _PROVIDER_LIBS.get(provider)
    if not libs:
        return True
    for lib in libs:
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


def _warn_once(profile: str, msg: str, *args) -> None:
    if (profile, msg % args) not in _warned:
        _warned.add((profile, msg % args))
        log.warning(msg, *args)


def providers_for(profile: DeviceProfile, model: str | None = None) -> list:
    """The profile's providers that this onnxruntime build has, in order; logs each fallback once.
    ``model`` (encoder, user, head) listed in the profile's ``cpu_models`` gets the CPU provider only."""
    from .ortload import onnxruntime

    ort = onnxruntime()

    if model is not None and model in profile.cpu_models:
        return ["CPUExecutionProvider"]
    have = set(ort.get_available_providers())
    out = []
    for p in profile.providers:
        if p.name not in have:
            _warn_once(profile.name, "profile %s asks for %s, which this onnxruntime lacks; falling back",
                       profile.name, p.name)
            continue
        if not _loadable(p.name):
            _warn_once(profile.name, "profile %s asks for %s, but its libraries (%s) are not installed; falling "
                       "back", profile.name, p.name, " or ".join(_PROVIDER_LIBS[p.name][:2]))
            continue
        opts = {k: (expand(v) if isinstance(v, str) and v.startswith("~") else v) for k, v in p.options.items()}
        out.append((p.name, {k: str(v) if isinstance(v, bool) else v for k, v in opts.items()}) if opts else p.name)
    return out or ["CPUExecutionProvider"]


def make_session(model_path: str | Path, profile: DeviceProfile, sha256: str | None = None, variant: str = "",
                 model: str | None = None):
    """An InferenceSession for ``model_path`` set up as ``profile`` says (``model``: which part of the
    bundle it is, for the profile's ``cpu_models`` placement).

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
    providers = providers_for(profile, model)
    cpu_only = all((p if isinstance(p, str) else p[0]) == "CPUExecutionProvider" for p in providers)
    if profile.session.optimized_model_cache and sha256 and cpu_only:
        # keyed by machine too: an optimized graph may hold kernels chosen for this CPU (shared home folders)
        import platform

        cache.max_bytes()  # a bad GENRE_CACHE_MAX_MB is refused at every start, not only when an entry is written
        cached = cache.cache_dir() / "ort" / (f"{sha256[:24]}-ort{ort.__version__}-{platform.machine()}-"
                                        f"{profile.session.graph_optimization}.onnx")
        if cached.is_file():
            path = str(cached)
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            cache.used(cached)
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
        if cached is None:
            from .errors import BundleError

            raise BundleError(f"{model_path}: onnxruntime cannot load this model ({exc})") from None
        sess = _without_cache(ort, so, level, model_path, providers, cached, path == str(cached), exc)
        cached = None
    if cached is not None and path != str(cached):
        tmp = Path(str(cached) + f".{os.getpid()}.tmp")
        try:
            if tmp.is_file():
                os.replace(tmp, cached)  # atomic: a half-written cache is never picked up
                cache.prune(keep=(cached,))
        except OSError as exc:
            log.info("optimized-model cache not kept: %s", exc)
    used = sess.get_providers()
    if used[0] != (providers[0] if isinstance(providers[0], str) else providers[0][0]):
        _warn_once(profile.name, "profile %s: %s unavailable at run time; using %s", profile.name,
                   providers[0] if isinstance(providers[0], str) else providers[0][0], used[0])
    return sess
