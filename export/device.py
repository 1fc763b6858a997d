"""Where training and distillation run (``train.device``, ``device`` in distillation configs, ``--device``).

``cpu`` (the default), ``cuda`` (the GPU torch sees; with several processes, process N of a node takes GPU
``LOCAL_RANK``) or ``auto`` (cuda when torch sees a GPU, else cpu). The modules, the per-step tensors and the
tables the steps read (item embeddings, the bottom-layer cache) live on the device; what leaves it for numpy
(embeddings, scores for the metrics, saved weights) is copied to the CPU where it leaves. A CUDA request that
cannot be met is refused with what to install, never silently run on the CPU.
"""
from __future__ import annotations

import logging
import os

from genre_edge.errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")

# the version this project pins; on Linux x86-64, PyPI's torch wheel is the CUDA build (the CPU build comes from
# PyTorch's CPU index, which is how this project's CPU machines install it)
CUDA_INSTALL = "pip install --force-reinstall torch==2.13.0"


def resolve_device(torch, name: str, local_rank: int | None = None):
    """The ``torch.device`` for ``name`` (one of :data:`DEVICES`); ``local_rank``: this process's GPU on its
    node when several processes train (default: ``LOCAL_RANK`` from the launcher, else 0)."""
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = (f"this torch ({torch.__version__}) is a CPU-only build" if torch.version.cuda is None else
                 f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU or driver")
        raise ConfigError(f"device 'cuda': {build}. For an NVIDIA GPU install a CUDA build of torch "
                          f"({CUDA_INSTALL} from PyPI, whose Linux x86-64 wheel is "
                          f"the CUDA one; its CUDA must suit your driver), or train with --device cpu")
    rank = int(os.environ.get("LOCAL_RANK", "0") or 0) if local_rank is None else local_rank
    n = torch.cuda.device_count()
    if rank >= n:
        raise ConfigError(f"device 'cuda': process {rank} of this node needs GPU {rank}, but torch sees {n}; "
                          f"start at most {n} processes per node")
    torch.cuda.set_device(rank)
    dev = torch.device("cuda", rank)
    log.info("training on %s (%s)", dev, torch.cuda.get_device_name(rank))
    return dev


def seed_torch(torch, seed: int, dev) -> None:
    """Seed torch and, on the CPU, make the same seed (and thread count) give the same weights bit for bit.

    Why: with more than one thread, PyTorch's CPU backward of indexing by a tensor (``rows[idx]``, as the
    training step gathers its candidates' rows) accumulates in a thread-dependent order, so two runs of the same
    config and seed on the same machine differed by ~3e-5 per weight, and the distilled int8 encoder built from
    them by enough to move one film's rank in the cold-validation gate (0.888 vs 0.907 kept). PyTorch's
    deterministic algorithms remove that at no measured cost (ml-100k-quick,
    2 threads: 159-163 s without, 162-163 s with).
    ``warn_only``: an op without a deterministic CPU kernel warns instead of stopping a run. On a GPU the
    switch also needs ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts and costs speed; GPU runs go without
    it."""
    torch.manual_seed(seed)
    # set either way: the switch is process-wide, and a GPU run after a CPU one in the same process keeps its speed
    torch.use_deterministic_algorithms(dev.type == "cpu", warn_only=True)


def run_facts(torch, dev) -> dict:
    """What a training or distillation report records of how its weights were made: on the CPU, the same
    config and seed give the same weights with the same ``threads`` and ``torch`` (see :func:`seed_torch`)."""
    return {"threads": torch.get_num_threads(), "device": str(dev), "torch": torch.__version__,
            "deterministic": torch.are_deterministic_algorithms_enabled()}
