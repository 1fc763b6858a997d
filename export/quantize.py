"""Quantization presets (a registry) and the variants they produce.

Names follow optimum's hardware-named presets (avx2, avx512_vnni, arm64): int8 dynamic with
signed weights **per channel** everywhere, because per-tensor int8 dropped embedding cosine to
0.92 on MiniLM while per-channel keeps >= 0.98. QUInt8 weights were 1.7x slower on this CPU and
ORT's BERT fusion before quantization made int8 slower, so neither is used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantPreset:
    name: str
    dtype: str  # fp32, int8, fp16
    per_channel: bool = True
    reduce_range: bool = False
    doc: str = ""


QUANT_PRESETS: dict[str, QuantPreset] = {
    "fp32": QuantPreset("fp32", "fp32", doc="reference; largest and slowest"),
    # avx512_vnni / arm64 (dot-product) have no u8*s8 saturation problem: full 8-bit range
    "int8-avx512vnni": QuantPreset("int8-avx512vnni", "int8", True, False,
                                   "dynamic int8, per-channel QInt8 weights (x86 VNNI, also arm64)"),
    "int8-arm64": QuantPreset("int8-arm64", "int8", True, False,
                              "dynamic int8, per-channel QInt8 weights (Cortex-A72/A76 NEON)"),
    # AVX2 without VNNI: vpmaddubsw can saturate with full-range u8*s8, so reduce to 7 bits
    "int8-avx2": QuantPreset("int8-avx2", "int8", True, True,
                             "dynamic int8, per-channel, 7-bit weights (AVX2 without VNNI)"),
    "fp16": QuantPreset("fp16", "fp16", doc="GPU (CUDA / TensorRT) profiles"),
    # Static: activation ranges fixed from a calibration set (the catalog's own texts), QDQ format
    # (what TensorRT and NPU delegates consume). Measured here: less accurate than dynamic, no faster.
    "int8-qdq": QuantPreset("int8-qdq", "int8", True, False,
                            "static int8 QDQ, per-channel weights, activations calibrated on item texts"),
}

# Presets that produce byte-identical files share one file in a bundle.
SAME_FILE = {"int8-arm64": "int8-avx512vnni"}


def quantize(src: str | Path, dst: str | Path, preset: str, calibration=None) -> Path:
    """Write ``src`` quantized with ``preset`` to ``dst``.

    ``calibration``: for static presets, an iterable of input feeds (dicts of name -> array).
    """
    p = QUANT_PRESETS[preset]
    src, dst = Path(src), Path(dst)
    if preset == "int8-qdq":
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        feeds = list(calibration or [])
        if not feeds:
            raise ValueError("the int8-qdq preset needs calibration feeds (item texts)")

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(feeds)

            def get_next(self):
                return next(self.it, None)

        quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"], calibrate_method=CalibrationMethod.MinMax)
    elif p.dtype == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMul/Gemm weights and the token-embedding Gather (the largest tensor) go to int8.
        quantize_dynamic(str(src), str(dst), per_channel=p.per_channel, reduce_range=p.reduce_range,
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                         extra_options={"MatMulConstBOnly": True})
    elif p.dtype == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        m = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(m, str(dst))
    else:
        import shutil

        shutil.copy(src, dst)
    return dst
