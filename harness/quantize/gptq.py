"""GPTQ through gptqmodel: calibrated on the training split, saved in the standard GPTQ
checkpoint layout (`quantize_config.json` beside packed safetensors), loaded back by
gptqmodel, which picks its kernel for the device (on a CPU: an ATen int4 kernel for 4 bits,
plain torch otherwise).

gptqmodel is imported only here, and only to build or run a GPTQ artifact: importing it
patches parts of transformers, which the other formats should not run under.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from harness.config import GPTQ_GROUP_SIZES, QuantConfig
from harness.data.dataset import read_split, spread
from harness.prompt import answer, render_prompt

log = logging.getLogger(__name__)


def _import_gptqmodel():
    # gptqmodel sizes its CPU worker pool at half the cores, but its model-loader pool asks
    # for two workers from it: on a 2-core machine the default pool (1) refuses to start.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, (os.cpu_count() or 1) // 2)))
    import gptqmodel

    return gptqmodel


def calibration_texts(tokenizer, data_dir: Path, system: str, n: int) -> list[str]:
    """`n` training rows from across the split, as the model sees them in use: prompt plus
    answer."""
    rows = spread(read_split(data_dir, "train"), n)
    return [render_prompt(tokenizer, r["text"], system) + answer(r["intent"]) for r in rows]


def quantize(model_dir: Path, quant: QuantConfig, texts: Sequence[str], device: str, out: Path) -> None:
    gptqmodel = _import_gptqmodel()
    from transformers import AutoTokenizer

    model_dir, out = model_dir.resolve(), out.resolve()
    config = gptqmodel.QuantizeConfig(bits=quant.bits, group_size=quant.group_size, desc_act=quant.desc_act)
    # gptqmodel writes its per-layer quantization logs under ./logs: keep them with the artifact
    with contextlib.chdir(out):
        model = gptqmodel.GPTQModel.load(str(model_dir), config, device=device)
        model.quantize(list(texts), batch_size=8)
    model.save(str(out))
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)


def load(model_dir: Path, device: str):
    """The quantized checkpoint as a transformers model (gptqmodel wraps one)."""
    gptqmodel = _import_gptqmodel()
    backend = gptqmodel.BACKEND.AUTO
    widths, group = layer_inputs(model_dir)
    if device == "cpu" and group != -1 and any(w % group for w in widths):
        # gptqmodel's choice on a CPU, the ATen int4pack kernel, says it pads any width but
        # fails on a layer whose input width is not a multiple of the group size (SmolLM2's
        # 576 with groups of 128); its plain torch kernel computes the same weights, slower.
        fits = [g for g in GPTQ_GROUP_SIZES if g > 0 and all(w % g == 0 for w in widths)]
        log.warning(
            "GPTQ groups of %d do not tile this model's layer inputs %s: running gptqmodel's plain torch kernel, "
            "several times slower on a CPU than its int4 kernel; quant.group_size=%s tiles them",
            group, sorted(set(widths)), max(fits, default=-1),
        )
        backend = gptqmodel.BACKEND.GPTQ_TORCH
    return gptqmodel.GPTQModel.load(str(model_dir), device=device, backend=backend).model


def layer_inputs(model_dir: Path) -> tuple[tuple[int, ...], int]:
    """(input widths of a decoder's linear layers, GPTQ group size) of a quantized checkpoint."""
    config = json.loads((model_dir / "config.json").read_text())
    group = json.loads((model_dir / "quantize_config.json").read_text())["group_size"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"] * head_dim), group


def version() -> str:
    # from the package metadata: a cached artifact needs no import of gptqmodel
    return importlib.metadata.version("gptqmodel")
