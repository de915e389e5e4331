"""GPTQ through gptqmodel: calibrated on the training split, saved in the standard GPTQ
checkpoint layout (`quantize_config.json` beside packed safetensors), loaded back by
gptqmodel. On a CPU gptqmodel picks its kernel (an ATen int4 kernel for 4 bits, plain torch
otherwise); on a GPU the harness picks it (`cuda_kernel`).

gptqmodel patches parts of transformers when imported: it is imported only inside the
spawned processes that build or measure a GPTQ artifact, never in the sweep's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from harness.errors import ConfigError, choices
from harness.formats import BuildInputs, Format, calibration_texts, layer_widths, register

log = logging.getLogger(__name__)
# Group sizes gptqmodel's kernels take (-1: one group per weight row).
GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)
DEFAULT_GROUP_SIZE = 64
DEFAULT_CALIBRATION_SAMPLES = 256


@register
@dataclass
class GPTQQuant(Format):
    # Weights per scale group. 64 tiles both SmolLM2-135M's 576-wide layers and Llama 3.2's;
    # 128, the usual choice elsewhere, leaves a ragged group in SmolLM2, which costs accuracy
    # and gptqmodel's fast CPU kernel.
    group_size: int = DEFAULT_GROUP_SIZE
    # Activation-order quantization.
    desc_act: bool = False
    # Training rows that calibrate it.
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES

    FORMATS = ("gptq",)
    PACKAGES = ("gptqmodel", "optimum", "transformers")
    EXTRA = "gptq"

    def widths(self) -> dict[int, str]:
        return {b: f"int{b}" for b in (2, 3, 4, 8)}

    def validate(self) -> None:
        if self.group_size not in GROUP_SIZES:
            raise ConfigError(
                f"quant.group_size={self.group_size} is not a GPTQ group size; choose one of: "
                f"{choices(GROUP_SIZES)} (-1 = one group per weight row)"
            )
        if self.calibration_samples < 1:
            raise ConfigError("quant.calibration_samples must be >= 1 (GPTQ calibrates on that many training rows)")

    @property
    def name(self) -> str:
        extras = [
            f"g{self.group_size}" if self.group_size != DEFAULT_GROUP_SIZE else "",
            "act" if self.desc_act else "",
            f"cal{self.calibration_samples}" if self.calibration_samples != DEFAULT_CALIBRATION_SAMPLES else "",
        ]
        return "_".join([f"gptq{self.bits}", *filter(None, extras)])

    def key_parts(self, inputs: BuildInputs) -> list:
        # The calibration texts follow from the model (its chat template), the dataset, the
        # system prompt and their number: the key names those, and only a build renders them.
        calibration = (Path(inputs.data_dir).name, inputs.system, self.calibration_samples)
        return [self.format, (self.bits, self.group_size, self.desc_act), calibration, inputs.device]

    def build(self, source: Path, inputs: BuildInputs, out: Path) -> None:
        from transformers import AutoTokenizer

        gptqmodel = _import_gptqmodel()
        source, out = source.resolve(), out.resolve()
        texts = calibration_texts(
            AutoTokenizer.from_pretrained(source), Path(inputs.data_dir), inputs.system, self.calibration_samples
        )
        config = gptqmodel.QuantizeConfig(bits=self.bits, group_size=self.group_size, desc_act=self.desc_act)
        # gptqmodel writes its per-layer quantization logs under ./logs: keep them with the artifact
        with contextlib.chdir(out):
            model = gptqmodel.GPTQModel.load(str(source), config, device=inputs.device)
            model.quantize(list(texts), batch_size=8)
        model.save(str(out))
        AutoTokenizer.from_pretrained(source).save_pretrained(out)

    def prepare_kernels(self, hardware) -> None:
        if hardware.device == "cuda":
            cuda_kernel(self.bits)

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.transformers import TransformersRuntime

        if hardware.device != "cuda":
            return TransformersRuntime(artifact, hardware, threads, lambda device: load_on_cpu(artifact))
        kernel = cuda_kernel(self.bits)
        rt = TransformersRuntime(
            artifact,
            hardware,
            threads,
            lambda device: load_with_fallback(kernel, lambda backend: load(artifact, device, backend)),
        )
        rt.kernel_choice = dataclasses.asdict(kernel)
        return rt


def _import_gptqmodel():
    # gptqmodel sizes its CPU worker pool at half the cores, but its model-loader pool asks
    # for two workers from it: on a 2-core machine the default pool (1) refuses to start.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, (os.cpu_count() or 1) // 2)))
    # Nothing may download at run time: its Hopper kernel (Machete) would fetch CUTLASS.
    os.environ["GPTQMODEL_OFFLINE"] = "1"
    import gptqmodel

    return gptqmodel


# gptqmodel's backends, by their BACKEND values: Marlin, its fast 4- and 8-bit GPU kernel (a
# JIT-compiled extension), and plain torch, which runs wherever torch does.
MARLIN, TORCH = "gptq_marlin", "gptq_torch"
MARLIN_BITS = (4, 8)
MARLIN_MIN_CAPABILITY = (7, 5)


@dataclass
class Kernel:
    """The GPTQ kernel a GPU measurement asks gptqmodel for. Chosen explicitly: gptqmodel's
    automatic choice picks Marlin even where its extension cannot build (no nvcc, or one that
    does not match torch's CUDA), and the load then fails with no fallback."""

    backend: str
    # Seconds spent building or loading its extension: one-time work, kept out of load_s.
    setup_s: float = 0.0
    # Why it is not the kernel first chosen, if it is not.
    fallback_reason: Optional[str] = None


def choose_cuda_kernel(bits: int, capability: tuple[int, int], prewarm_marlin: Callable[[], Optional[str]]) -> Kernel:
    """Marlin where it applies and its extension builds and loads (`prewarm_marlin` returns
    None, or why not); gptqmodel's torch kernel otherwise, with the reason."""
    if bits not in MARLIN_BITS:
        return Kernel(TORCH, fallback_reason=f"Marlin takes {' or '.join(map(str, MARLIN_BITS))} bits, not {bits}")
    if tuple(capability) < MARLIN_MIN_CAPABILITY:
        return Kernel(
            TORCH, fallback_reason="Marlin needs compute capability 7.5; this GPU is {}.{}".format(*capability)
        )
    t0 = time.perf_counter()
    error = prewarm_marlin()
    setup_s = time.perf_counter() - t0
    if error:
        return Kernel(TORCH, setup_s, f"Marlin's extension did not build or load: {error}")
    return Kernel(MARLIN, setup_s)


def load_with_fallback(kernel: Kernel, load_with: Callable[[str], Any]) -> Any:
    """`load_with(kernel.backend)`; where the chosen kernel fails to load, the torch kernel's
    load, the reason kept in `kernel`."""
    try:
        return load_with(kernel.backend)
    except Exception as exc:  # gptqmodel raises many kinds (ValueError, ImportError, RuntimeError, ...)
        if kernel.backend == TORCH:
            raise
        log.warning("GPTQ kernel %s failed to load (%r): loading with %s", kernel.backend, exc, TORCH)
        kernel.fallback_reason = f"{kernel.backend} failed at load: {exc!r}"
        kernel.backend = TORCH
        return load_with(TORCH)


@functools.cache
def cuda_kernel(bits: int) -> Kernel:
    """The kernel for this process's GPU, its extension built once per process."""
    from harness.hardware import cuda_capability, gpu_half_dtype

    _import_gptqmodel()
    dtype = gpu_half_dtype()

    def prewarm() -> Optional[str]:
        from gptqmodel.utils.marlin import marlin_runtime_error, prewarm_marlin_extension

        try:
            if prewarm_marlin_extension(dtype):
                return None
        except Exception as exc:  # a compiler's failure, in whatever form the build reports it
            return repr(exc)
        return marlin_runtime_error(dtype) or "unavailable, with no reason given"

    return choose_cuda_kernel(bits, cuda_capability(), prewarm)


def load(model_dir: Path, device: str, backend: str):
    """The quantized checkpoint as a transformers model (gptqmodel wraps one), on `backend`,
    in the GPU's native half precision (Marlin refuses bf16 below compute capability 8.0)."""
    from harness.hardware import gpu_half_dtype

    gptqmodel = _import_gptqmodel()
    return gptqmodel.GPTQModel.load(
        str(model_dir), device=device, backend=gptqmodel.BACKEND(backend), dtype=gpu_half_dtype()
    ).model


def load_on_cpu(model_dir: Path):
    """The quantized checkpoint on the CPU, on the kernel gptqmodel picks there."""
    gptqmodel = _import_gptqmodel()
    backend = gptqmodel.BACKEND.AUTO
    widths, group = layer_inputs(model_dir)
    if group != -1 and any(w % group for w in widths):
        # gptqmodel's choice on a CPU, the ATen int4pack kernel, says it pads any width but
        # fails on a layer whose input width is not a multiple of the group size (SmolLM2's
        # 576 with groups of 128); its plain torch kernel computes the same weights, slower.
        fits = [g for g in GROUP_SIZES if g > 0 and all(w % g == 0 for w in widths)]
        log.warning(
            "GPTQ groups of %d do not tile this model's layer inputs %s: running gptqmodel's plain torch kernel, "
            "several times slower on a CPU than its int4 kernel; quant.group_size=%s tiles them",
            group,
            sorted(set(widths)),
            max(fits, default=-1),
        )
        backend = gptqmodel.BACKEND.GPTQ_TORCH
    return gptqmodel.GPTQModel.load(str(model_dir), device="cpu", backend=backend).model


def layer_inputs(model_dir: Path) -> tuple[tuple[int, ...], int]:
    """(input widths of a decoder's linear layers, GPTQ group size) of a quantized checkpoint."""
    config = json.loads((model_dir / "config.json").read_text())
    group = json.loads((model_dir / "quantize_config.json").read_text())["group_size"]
    return layer_widths(config), group
