"""Data-parallel training and distillation over several processes (one machine or several).

Processes come from a launcher: ``accelerate launch --num_processes N ...`` or ``torchrun
--nproc-per-node N ...`` set ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them
training is one process, exactly as before. Every process holds the whole model and the same data;
each global batch is split across the processes, their gradients are averaged (``all_reduce`` with
gloo, on CPU tensors or, with ``--device cuda``, on each process's GPU) before the optimizer step, so N processes at batch B/N each follow the one
process at batch B. Evaluation, model selection and calibration need no communication: the weights
are identical everywhere, so every process decides the same; only rank 0 writes the model folder
(the others write to a private temporary folder, removed at the end).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class DataParallel:
    """This process's place among the training processes (``world == 1``: no communication at all)."""

    def __init__(self, rank: int = 0, world: int = 1, backend: str = "gloo"):
        self.rank, self.world, self.backend = rank, world, backend
        self._tmp: str | None = None

    @classmethod
    def from_env(cls) -> "DataParallel":
        """From the launcher's environment; starts the process group when there are several processes."""
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls()
        import torch.distributed as dist

        # gloo: it reduces CPU tensors and, through host memory, CUDA ones (--device cuda: one GPU per process);
        # NCCL would be faster between GPUs but cannot reduce CPU tensors, and CPU training is the common case
        backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        dp = cls(dist.get_rank(), dist.get_world_size(), backend)
        log.info("data-parallel training: process %d of %d (%s)", dp.rank, dp.world, backend)
        return dp

    @property
    def main(self) -> bool:
        return self.rank == 0

    def out_dir(self, out: Path) -> Path:
        """Where this process writes: ``out`` on rank 0, a private temporary folder elsewhere."""
        if self.main:
            return out
        self._tmp = tempfile.mkdtemp(prefix=f"genre-rank{self.rank}-")
        return Path(self._tmp)

    def threads(self, requested: int) -> int:
        """Threads per process: the cores shared among the processes on this machine, unless configured."""
        if requested:
            return requested
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world) or self.world)
        return max(1, (os.cpu_count() or 1) // max(1, local))

    def shard(self, *arrays: np.ndarray):
        """This process's part of a global batch (rows rank, rank + world, ...)."""
        if self.world == 1:
            return arrays
        return tuple(a[self.rank :: self.world] for a in arrays)

    def broadcast(self, params) -> None:
        """Rank 0's values everywhere (the processes start from one model)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            dist.broadcast(p.data, 0)

    def average_grads(self, params) -> None:
        """Mean gradient over the processes, in one flat all_reduce (a parameter without a gradient here
        counts as zeros, so every process sends the same layout)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        params = list(params)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        at = 0
        for p in params:
            n = p.numel()
            g = flat[at : at + n].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
            at += n

    def mean(self, value: float) -> float:
        """A number averaged over the processes (the loss the curves show)."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item() / self.world)

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()
