"""Mixed precision for training and distillation steps (``train.precision``, ``precision`` in distill configs).

``bf16`` runs a step's forward pass under ``torch.autocast`` in bfloat16 (matrix products and linear layers;
softmax, losses and the optimizer stay float32): on CPUs with AVX-512 BF16 or AMX and on GPUs from Ampere on.
No loss scaling is needed (bfloat16 keeps float32's exponent range), which is why float16 is not offered.
Measured on a 2-core AMD EPYC with AVX-512 BF16 (``benchmarks/train_large.py``, content model, batch 4096):
0.67 -> 0.51 s a step, the same training loss to four decimals.
"""
from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


def autocast(torch, precision: str, device_type: str = "cpu"):
    """The context a step's forward pass runs in for ``precision`` (fp32: nothing)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def check_precision(precision: str, device_type: str = "cpu") -> None:
    """Warn where bf16 would be emulated (slower than fp32): training on an x86 CPU without AVX-512 BF16 or
    AMX, as the runtime's machine detection sees it (the flags this process can use)."""
    if precision != "bf16" or device_type != "cpu":
        return
    from genre_edge.profile import machine_info

    m = machine_info()
    if m.arch == "x86_64" and m.cpu_flags and not m.cpu_flags & {"avx512_bf16", "amx_bf16"}:
        log.warning("precision bf16: this CPU has neither AVX-512 BF16 nor AMX; bfloat16 products are emulated "
                    "and usually slower than fp32 here")
