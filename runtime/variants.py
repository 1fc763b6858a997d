"""The one registry of encoder variant names: what a bundle may ship, a profile may ask for, and
the exporter may build. Each name says dtype and target (``encoder.<variant>.onnx`` in a bundle)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    dtype: str  # fp32, int8 or fp16: what the exporter produces and the bundle manifest records
    doc: str


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("fp32", "fp32", "reference; largest and slowest"),
    Variant("int8-avx512vnni", "int8", "dynamic int8, per-channel QInt8 weights (x86 VNNI, also arm64)"),
    Variant("int8-arm64", "int8", "dynamic int8, per-channel QInt8 weights (Cortex-A72/A76 NEON)"),
    Variant("int8-avx2", "int8", "dynamic int8, per-channel, 7-bit weights (AVX2 without VNNI)"),
    Variant("fp16", "fp16", "GPU (CUDA / TensorRT) profiles"),
    Variant("int8-qdq", "int8", "static int8 QDQ, per-channel weights, activations calibrated on item texts"),
)}

# Variants whose files are byte-identical share one file in a bundle (the key is built as the value).
SAME_FILE: dict[str, str] = {"int8-arm64": "int8-avx512vnni"}

# The variants an exporter builds as files of their own (the others reuse one of these).
BUILT: tuple[str, ...] = tuple(v for v in VARIANTS if v not in SAME_FILE)
