"""Quantization presets (a registry) and the variants they produce.

Names follow optimum's hardware-named presets (avx2, avx512_vnni, arm64): int8 dynamic with
signed weights **per channel** everywhere, because per-tensor int8 dropped embedding cosine to
0.92 on MiniLM while per-channel keeps >= 0.98. QUInt8 weights were 1.7x slower on this CPU and
ORT's BERT fusion before quantization made int8 slower, so neither is used for int8. The fp16
variant for GPU profiles is fused with optimum's ORTOptimizer (see :func:`fuse_fp16`).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genre_edge.variants import SAME_FILE, VARIANTS  # noqa: F401 (SAME_FILE re-exported)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantPreset:
    name: str
    per_channel: bool = True
    reduce_range: bool = False

    @property
    def dtype(self) -> str:  # fp32, int8, fp16: from the one variant registry
        return VARIANTS[self.name].dtype

    @property
    def doc(self) -> str:
        return VARIANTS[self.name].doc


# One preset per variant of the registry (a test checks the keys match).
QUANT_PRESETS: dict[str, QuantPreset] = {
    "fp32": QuantPreset("fp32"),
    # avx512_vnni / arm64 (dot-product) have no u8*s8 saturation problem: full 8-bit range
    "int8-avx512vnni": QuantPreset("int8-avx512vnni", True, False),
    "int8-arm64": QuantPreset("int8-arm64", True, False),
    # AVX2 without VNNI: vpmaddubsw can saturate with full-range u8*s8, so reduce to 7 bits
    "int8-avx2": QuantPreset("int8-avx2", True, True),
    "fp16": QuantPreset("fp16"),
    # Static: activation ranges fixed from a calibration set (the catalog's own texts), QDQ format
    # (what TensorRT and NPU delegates consume). Measured here: less accurate than dynamic, no faster.
    "int8-qdq": QuantPreset("int8-qdq", True, False),
}


class _PreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing before quantization")


@contextmanager
def _without_preprocess_advice():
    """Drop onnxruntime's root-logger advice to pre-process (fuse) the graph before dynamic quantization: the
    unfused graph is quantized on purpose (fused, the int8 encoder was slower on the CPU; README), so every
    export printed a WARNING with a URL that a user could only take for a problem."""
    f = _PreprocessAdvice()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def quantize(src: str | Path, dst: str | Path, preset: str, calibration=None, hf_config: str | Path | None = None) -> Path:
    """Write ``src`` quantized with ``preset`` to ``dst``.

    ``calibration``: for static presets, an iterable of input feeds (dicts of name -> array).
    ``hf_config``: the encoder's Hugging Face ``config.json`` (heads, hidden size), which the fp16
    preset's fusion reads; without it fp16 is a plain cast.
    """
    from genre_edge.ortload import onnxruntime

    onnxruntime()  # loaded with telemetry off before onnxruntime.quantization imports it
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
        with _without_preprocess_advice():
            quantize_dynamic(str(src), str(dst), per_channel=p.per_channel, reduce_range=p.reduce_range,
                             weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                             extra_options={"MatMulConstBOnly": True})
    elif p.dtype == "fp16" and hf_config is not None:
        fuse_fp16(src, dst, Path(hf_config))
    elif p.dtype == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        m = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(m, str(dst))
    else:
        import shutil

        shutil.copy(src, dst)
    return dst


def fuse_fp16(src: Path, dst: Path, hf_config: Path) -> Path:
    """The GPU variant through optimum's ``ORTOptimizer``: ONNX Runtime's BERT fusions for GPU (one
    ``Attention`` node per layer, ``SkipLayerNormalization``, ``BiasGelu``) and then fp16 weights and
    activations, inputs and output kept in their original types.

    Why optimum here and not in the int8 CPU variants: fusion made dynamic int8 slower on the CPU
    (the quantizer then sees fused nodes it does not handle), while CUDA/TensorRT run fused fp16
    attention as one kernel instead of ~20 small ones per layer.
    """
    import shutil
    import tempfile

    from . import require

    require("optimum.onnxruntime", "export", "the fp16 GPU variant (optimum's ORTOptimizer)")
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    with tempfile.TemporaryDirectory(prefix="genre-fp16-") as tmp:
        work = Path(tmp)
        shutil.copy(src, work / "model.onnx")
        shutil.copy(hf_config, work / "config.json")
        opt = ORTOptimizer.from_pretrained(work, file_names=["model.onnx"])
        # optimize_for_gpu without a GPU here: ORT's optimizer says so and fuses for GPU kernels anyway
        opt.optimize(save_dir=work / "out", optimization_config=OptimizationConfig(
            optimization_level=2, optimize_for_gpu=True, fp16=True))
        shutil.move(str(work / "out" / "model_optimized.onnx"), str(dst))
    return dst
