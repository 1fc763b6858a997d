"""Device profiles: what a device is, what it can run, and how to set up ONNX Runtime on it.

Profiles are TOML files (``device_profiles/*.toml`` ship with the runtime). ``detect`` reads
``/proc/cpuinfo``, ``/proc/device-tree/model`` and ``/etc/nv_tegra_release``; tests feed it
recorded text from each device.
"""
from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from . import config as cfg
from .errors import ConfigError
from .variants import VARIANTS

log = logging.getLogger(__name__)

PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class Threads:
    intra_op: int = cfg.bounded(1, 0, 256, "0 = ONNX Runtime default (all cores)")
    inter_op: int = cfg.bounded(1, 0, 256)


@dataclass(frozen=True)
class SessionSettings:
    execution_mode: str = cfg.choice("sequential", ("sequential", "parallel"))
    graph_optimization: str = cfg.choice("extended", ("disable", "basic", "extended", "all"))
    allow_spinning: bool = False  # spinning threads burn CPU and make latency jittery on small boards
    memory_arena: bool = True
    optimized_model_cache: bool = True


@dataclass(frozen=True)
class Provider:
    name: str = cfg.choice("CPUExecutionProvider", PROVIDERS)
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str = ""
    arch: str = cfg.choice("x86_64", ("x86_64", "aarch64"))
    cpu_features: tuple[str, ...] = ()
    device_tree_match: tuple[str, ...] = ()
    tegra_release_match: tuple[str, ...] = ()
    variant: str = cfg.choice("int8-avx512vnni", VARIANTS)
    fallback_variants: tuple[str, ...] = cfg.choice(("fp32",), VARIANTS)
    max_batch: int = cfg.bounded(32, 1, 4096)
    max_tokens: int = cfg.bounded(32, 4, 512)
    memory_budget_mib: int = cfg.bounded(500, 16, 1 << 20)
    # whole-catalog scoring: int8 index (pre-packed MatMulInteger), 4-bit index (MatMulNBits) or numpy float32;
    # auto = an index from 20k items on, 4-bit on x86 without VNNI for rows of 256+ dims, else int8 (see
    # catalog_index.py for the measurements behind it)
    # ann: an approximate index proposes candidates (very large catalogs; optional extra, catalog_ann.py)
    catalog_scoring: str = cfg.choice("auto", ("auto", "fp32", "int8", "int4", "ann"))
    ann_candidates: int = cfg.bounded(1000, 10, 1_000_000, "ann: rows the approximate index proposes per request")
    ann_nprobe: int = cfg.bounded(64, 1, 1_000_000, "ann: clusters scanned per request (more: better recall, slower)")
    threads: Threads = field(default_factory=Threads)
    session: SessionSettings = field(default_factory=SessionSettings)
    providers: tuple[Provider, ...] = (Provider(),)
    # Models that run on the CPU provider whatever ``providers`` says: the user model and the scoring
    # head are tiny graphs, and on a GPU the launch and copy costs make them slower than on the CPU
    # (measured on an H200 host: a history-only request 0.74 ms on the GPU vs 0.27 ms on its CPU).
    cpu_models: tuple[str, ...] = cfg.choice((), ("encoder", "user", "head"))
    # false: only chosen by name (a GPU host profile: a GPU alone does not make onnxruntime-gpu present)
    auto_detect: bool = True
    # a public key file (Ed25519 PEM): only bundles signed with it are loaded (GENRE_TRUSTED_KEY wins)
    trusted_key: str = ""

    def validate(self):
        if not self.providers:
            raise ConfigError("providers: at least one execution provider is required")
        if self.providers[-1].name != "CPUExecutionProvider":
            raise ConfigError("providers: the last provider must be CPUExecutionProvider (the fallback)")


def builtin_dir() -> Path:
    return Path(str(files("genre_edge.device_profiles")))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def load_profile(spec: str | Path) -> DeviceProfile:
    """A built-in profile name, ``auto`` (detect), or a path to a user's TOML profile."""
    if str(spec) == "auto":
        return detect()
    p = Path(spec)
    if p.suffix == ".toml" or p.exists():
        return cfg.load(DeviceProfile, p)
    if str(spec) not in builtin_names():
        raise ConfigError(f"unknown profile {spec!r}; choose one of: auto, {', '.join(builtin_names())}, or a .toml path")
    return cfg.load(DeviceProfile, builtin_dir() / f"{spec}.toml")


def all_profiles() -> list[DeviceProfile]:
    return [load_profile(n) for n in builtin_names()]


# ------------------------------------------------------------------ machine facts
@dataclass
class MachineInfo:
    arch: str
    cpu_flags: set[str]
    model: str = ""
    device_tree: str = ""
    tegra_release: str = ""
    providers: tuple[str, ...] | None = None  # onnxruntime's execution providers here (None: not asked)


def read_cpuinfo_flags(text: str) -> set[str]:
    """Flags from /proc/cpuinfo text: x86 'flags' lines or arm 'Features' lines."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(val.split())
    return flags


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return ""


# numpy's runtime CPU feature names -> /proc/cpuinfo flag names (what profiles list in cpu_features)
_NUMPY_FLAGS = {"AVX2": "avx2", "FMA3": "fma", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni",
                "AVX512_VNNI": "avx512_vnni", "ASIMD": "asimd", "ASIMDDP": "asimddp", "ASIMDHP": "asimdhp",
                "FPHP": "fphp", "SVE": "sve"}


# x86 flags that decide kernels (int8 dot products, bf16) but that numpy's detection does not report: trusted
# from /proc/cpuinfo only while its other flags agree with numpy's view of the running CPU
UNCONFIRMED_X86 = frozenset({"avx_vnni", "avx_vnni_int8", "avx_ifma", "avx_ne_convert", "amx_tile", "amx_int8",
                             "amx_bf16", "amx_fp16"})


def numpy_cpu_flags(features: dict | None = None) -> set[str]:
    """CPU flags from numpy's own runtime detection (macOS, Windows: no /proc/cpuinfo there)."""
    if features is None:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:  # numpy < 2
            try:
                from numpy.core._multiarray_umath import __cpu_features__ as features
            except ImportError:
                features = {}
    return {flag for name, flag in _NUMPY_FLAGS.items() if features.get(name)}


def runnable_x86_flags(flags: set[str], numpy_features: dict | None = None) -> set[str]:
    """``flags`` without the vector extensions numpy's runtime detection says this process cannot use."""
    if numpy_features is None:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as numpy_features
        except ImportError:
            return flags
    if not numpy_features:
        return flags
    drop = set()
    if numpy_features.get("AVX512F") is False:
        drop |= {f for f in flags if f.startswith("avx512")}
    if numpy_features.get("AVX512VNNI") is False and numpy_features.get("AVX512_VNNI") is not True:
        drop.add("avx512_vnni")
    if numpy_features.get("AVX2") is False:
        drop |= {"avx2", "fma"} | {f for f in flags if f.startswith("avx512")}
    if drop & flags:
        # the flags describe another CPU than the one running this code (e.g. QEMU user mode shows the host's):
        # what numpy cannot confirm goes too - a host's AVX-VNNI kept on an emulated Haswell made the int8
        # index skip its 7-bit queries there (top-200 overlap 0.973 instead of 1.000)
        drop |= UNCONFIRMED_X86 & flags
        log.info("CPU flags listed but not usable by this process (hypervisor/emulator): %s", ", ".join(sorted(drop & flags)))
    return set(flags) - drop


def machine_info(cpuinfo: str | None = None, device_tree: str | None = None, tegra: str | None = None,
                 arch: str | None = None, numpy_features: dict | None = None) -> MachineInfo:
    """What this machine is: /proc/cpuinfo on Linux; elsewhere (macOS, Windows) numpy's CPU detection.

    On x86 the /proc/cpuinfo flags of the real machine are checked against what this process can run
    (numpy's CPUID-based detection, which also sees the OS's XSAVE state): a hypervisor or an emulator
    (QEMU user mode shows the host's /proc/cpuinfo while the code runs on the emulated CPU) can list
    AVX-512/VNNI that the code does not get, and ONNX Runtime picks its kernels by CPUID."""
    real = cpuinfo is None
    cpuinfo = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    model = ""
    for line in cpuinfo.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("model name", "Model", "Hardware") and not model:
            model = v.strip()
    flags = read_cpuinfo_flags(cpuinfo) or numpy_cpu_flags(numpy_features)
    arch = arch or platform.machine().lower().replace("arm64", "aarch64").replace("amd64", "x86_64")
    if arch == "x86_64" and flags and (real or numpy_features is not None):
        flags = runnable_x86_flags(flags, numpy_features)
    return MachineInfo(
        arch=arch,
        cpu_flags=flags,
        model=model or platform.processor(),
        device_tree=_read("/proc/device-tree/model") if device_tree is None else device_tree,
        tegra_release=_read("/etc/nv_tegra_release") if tegra is None else tegra,
    )


def fits(profile: DeviceProfile, info: MachineInfo) -> tuple[bool, str]:
    """Whether ``profile`` can run on ``info``, with the reason when not."""
    if profile.arch != info.arch:
        return False, f"needs {profile.arch}, machine is {info.arch}"
    missing = [f for f in profile.cpu_features if f not in info.cpu_flags]
    if missing:
        return False, f"CPU lacks {', '.join(missing)}"
    accel = [p.name for p in profile.providers if p.name != "CPUExecutionProvider"]
    if accel and info.providers is not None and not set(accel) & set(info.providers):
        return False, f"needs {' or '.join(accel)} (onnxruntime-gpu), which this onnxruntime lacks"
    return True, "ok"


def available_providers() -> tuple[str, ...]:
    """This onnxruntime's execution providers (loads onnxruntime)."""
    from .ortload import onnxruntime

    return tuple(onnxruntime().get_available_providers())


def detect(info: MachineInfo | None = None, profiles: list[DeviceProfile] | None = None) -> DeviceProfile:
    """Pick the most specific built-in profile for this machine.

    Board identity (device tree / Tegra release) wins; otherwise the profile with the most
    required CPU features that the CPU has.
    """
    info = info or machine_info()
    profiles = [p for p in (profiles or all_profiles()) if p.auto_detect]
    for p in profiles:
        if p.tegra_release_match and info.tegra_release and any(m in info.tegra_release for m in p.tegra_release_match) \
                and (not p.device_tree_match or any(m in info.device_tree for m in p.device_tree_match)):
            return p
    for p in profiles:
        if p.device_tree_match and any(m in info.device_tree for m in p.device_tree_match) and p.arch == info.arch:
            return p
    ok = [p for p in profiles if fits(p, info)[0] and not p.device_tree_match and not p.tegra_release_match]
    if not ok:
        ok = [p for p in profiles if p.arch == info.arch and fits(p, info)[0]]
    if not ok:
        raise ConfigError(f"no built-in profile fits this machine ({info.arch}, flags: {len(info.cpu_flags)}); "
                          "write your own profile TOML and pass its path")
    # an unknown board (a Mac, a generic arm64 server) gets a CPU-only profile, never a GPU board's
    return max(ok, key=lambda p: (all(x.name == "CPUExecutionProvider" for x in p.providers), len(p.cpu_features)))


def expand(path: str) -> str:
    return os.path.expanduser(path)
