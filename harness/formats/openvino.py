"""OpenVINO: int8 and int4 weight compression by NNCF (`nncf.compress_weights`), run on
OpenVINO. The merged checkpoint is exported to the IR that OpenVINO GenAI's `LLMPipeline`
opens as it is, the layout optimum-intel writes: a stateful `openvino_model.xml/.bin`
(inputs `input_ids`, `attention_mask`, `position_ids`, `beam_idx`; output `logits`; the KV
cache held as the model's state), the tokenizer and detokenizer IRs of openvino-tokenizers,
and the checkpoint's config, generation config and tokenizer files.

The export is OpenVINO's own (`openvino.convert_model` on the torch model, then made stateful
by OpenVINO's transformation), not optimum-intel's: optimum-intel 2.2 requires transformers
< 5.6 (this project pins 5.23) and hard-requires torchvision, whose PyPI build replaces a
CPU torch with a CUDA one. The `[openvino]` extra brings openvino, openvino-genai,
openvino-tokenizers and nncf, none of which touches torch, transformers or numpy.

NNCF's defaults are kept: int8 asymmetric for every weight; int4 asymmetric in groups of
128 over the whole ratio of layers, with the embedding and the output layer (tied in
SmolLM2: one matrix) kept in int8. What it compressed is read back from the IR into the
record (`quantized`), not assumed.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from xml.etree import ElementTree

from harness.errors import ConfigError, choices
from harness.formats import BUILT_FACTS, BuildInputs, Format, calibration_texts, layer_widths, register

log = logging.getLogger(__name__)
MODEL_XML = "openvino_model.xml"
# What OpenVINO GenAI reads beside the model: its tokenizer and detokenizer, as IRs.
TOKENIZER_IRS = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")
# NNCF's group size for int4 (weights per scale); -1 is one group per output channel.
DEFAULT_GROUP_SIZE = 128
GROUP_SIZES = (-1, 16, 32, 64, 128, 256)
# NNCF's default number of calibration samples (its `subset_size`).
DEFAULT_CALIBRATION_SAMPLES = 128


@register
@dataclass
class OpenVINOQuant(Format):
    # int4 only. Weights per scale group; None: NNCF's 128, or, for a model whose layer inputs
    # 128 does not tile, the largest group size that does (64 for SmolLM2's 576), said in the
    # build's log and recorded (`quantized.group_size`). A group size set here that does not
    # tile them is refused with the one that does.
    group_size: Optional[int] = None
    # int4 only. The share of the decoder's layers in int4; the rest in int8 (NNCF's default: 1).
    ratio: float = 1.0
    # Symmetric weights with no zero point; NNCF's default is asymmetric.
    symmetric: bool = False
    # int4 only, data-aware, calibrated on the training split: activation-aware scaling (AWQ)
    # and scale estimation. NNCF's defaults: off.
    awq: bool = False
    scale_estimation: bool = False
    # Training rows the data-aware options calibrate on (NNCF's subset_size).
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES

    FORMATS = ("openvino",)
    PACKAGES = ("openvino", "openvino_genai", "openvino_tokenizers", "nncf")
    EXTRA = "openvino"

    def widths(self) -> dict[int, str]:
        return {8: "int8 weights (NNCF)", 4: "int4 weights in groups, embedding and output layer int8 (NNCF)"}

    def validate(self) -> None:
        if self.group_size is not None and self.group_size not in GROUP_SIZES:
            raise ConfigError(
                f"quant.group_size={self.group_size}: choose one of {choices(GROUP_SIZES)} "
                "(-1 = one group per output channel), or null for NNCF's 128"
            )
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"quant.ratio={self.ratio}: the share of layers in int4 is in (0, 1]")
        if self.calibration_samples < 1:
            raise ConfigError("quant.calibration_samples must be >= 1 (the data-aware options calibrate on them)")
        int4_only = {"group_size": None, "ratio": 1.0, "awq": False, "scale_estimation": False}
        changed = [k for k, default in int4_only.items() if getattr(self, k) != default]
        if self.bits == 8 and changed:
            raise ConfigError(f"quant.{changed[0]} applies to int4 only: set quant.bits=4, or leave it out")

    @property
    def data_aware(self) -> bool:
        return self.awq or self.scale_estimation

    @property
    def name(self) -> str:
        options = [
            f"g{self.group_size}" if self.group_size is not None else "",
            f"r{self.ratio:g}" if self.ratio != 1 else "",
            "sym" if self.symmetric else "",
            "awq" if self.awq else "",
            "se" if self.scale_estimation else "",
            f"cal{self.calibration_samples}"
            if self.data_aware and self.calibration_samples != DEFAULT_CALIBRATION_SAMPLES
            else "",
        ]
        return "_".join([f"openvino_int{self.bits}", *filter(None, options)])

    def describe(self) -> dict:
        facts: dict[str, Any] = {"mode": self.nncf_mode, "compressor": "nncf.compress_weights"}
        if self.bits == 4:
            facts.update(ratio=self.ratio, awq=self.awq, scale_estimation=self.scale_estimation)
        if self.data_aware:
            facts["calibration_samples"] = self.calibration_samples
        return facts

    @property
    def nncf_mode(self) -> str:
        return f"int{self.bits}_{'sym' if self.symmetric else 'asym'}"

    def key_parts(self, inputs: BuildInputs) -> list:
        options = (self.bits, self.symmetric, self.group_size, self.ratio, self.awq, self.scale_estimation)
        # the calibration texts follow from the dataset, the system prompt and their number
        calibration = (Path(inputs.data_dir).name, inputs.system, self.calibration_samples) if self.data_aware else None
        return [self.format, options, calibration]

    def tool(self) -> tuple[str, str]:
        import importlib.metadata

        versions = (importlib.metadata.version(p) for p in ("openvino", "nncf"))
        return "openvino.convert_model + nncf.compress_weights", "+".join(versions)

    def group_size_for(self, config: dict) -> Optional[int]:
        """The int4 group size that tiles every layer input of the model `config` describes;
        a ConfigError naming one that does, for a set group size that does not."""
        if self.bits != 4:
            return None
        widths = layer_widths(config)
        fits = [g for g in GROUP_SIZES if g == -1 or all(w % g == 0 for w in widths)]
        wanted = self.group_size or DEFAULT_GROUP_SIZE
        if wanted in fits:
            return wanted
        fix = f"quant.group_size={max(fits)} tiles them"
        if self.group_size is not None:
            raise ConfigError(f"quant.group_size={wanted} does not tile this model's layer inputs {widths}: {fix}")
        log.warning("NNCF's group size %d does not tile this model's layer inputs %s: %s", wanted, widths, fix)
        return max(fits)

    def build(self, source: Path, inputs: BuildInputs, out: Path) -> None:
        import nncf
        import openvino as ov

        from harness.formats.openvino_export import calibration_inputs, save_tokenizer_irs, stateful_ir

        group_size = self.group_size_for(json.loads((source / "config.json").read_text()))
        model_dir = self.artifact_path(out)
        model_dir.mkdir()
        model = stateful_ir(source)
        options: dict[str, Any] = {"mode": nncf.CompressWeightsMode(self.nncf_mode)}
        if self.bits == 4:
            options.update(group_size=group_size, ratio=self.ratio)
            options.update(awq=self.awq, scale_estimation=self.scale_estimation)
        if self.data_aware:
            from transformers import AutoTokenizer

            texts = calibration_texts(
                AutoTokenizer.from_pretrained(source), Path(inputs.data_dir), inputs.system, self.calibration_samples
            )
            options.update(dataset=nncf.Dataset(calibration_inputs(source, texts)), subset_size=len(texts))
        model = nncf.compress_weights(model, **options)
        # NNCF's compressed weights as they are, the few float ones (norms) left in fp32
        ov.save_model(model, model_dir / MODEL_XML, compress_to_fp16=False)
        save_tokenizer_irs(source, model_dir)
        for file in source.iterdir():  # config, generation config, tokenizer and chat template
            if file.suffix in (".json", ".jinja") and not file.name.endswith(".index.json"):
                shutil.copy(file, model_dir / file.name)
        summary = {**weight_summary(model_dir), "group_size": group_size}
        (out / BUILT_FACTS).write_text(json.dumps(summary))

    def artifact_path(self, directory: Path) -> Path:
        return directory / "model"

    def weight_files(self, artifact: Path) -> list[Path]:
        return ir_files(artifact)

    def verify(self, artifact: Path) -> None:
        check_openvino_dir(artifact)

    def open(self, artifact: Path, hardware, threads: int):
        from harness.runtimes.openvino_genai import OpenVINORuntime

        return OpenVINORuntime(artifact, hardware, threads)


def ir_files(model_dir: Path) -> list[Path]:
    """The model's IR: its graph and its weights on disk (the tokenizer IRs left out)."""
    return [model_dir / MODEL_XML, model_dir / MODEL_XML.replace(".xml", ".bin")]


def _ir_layers(xml: Path, fix: str) -> list[ElementTree.Element]:
    try:
        return list(ElementTree.parse(xml).getroot().iter("layer"))
    except ElementTree.ParseError as exc:
        raise ValueError(f"{xml} is a damaged IR ({exc}); {fix}") from None


def check_openvino_dir(model_dir: Path, fix: str = "delete it so the harness rebuilds it") -> None:
    """A clear error for a directory OpenVINO GenAI would fail to open, or open damaged: not a
    directory, no model IR or no weights beside it, a damaged graph, weights shorter than the
    constants the graph places in them, no tokenizer or detokenizer IR."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such OpenVINO model directory")
    xml, weights = ir_files(model_dir)
    if not xml.is_file():
        raise ValueError(f"{model_dir} is not an OpenVINO model directory (no {MODEL_XML}); {fix}")
    if not weights.is_file():
        raise ValueError(f"{model_dir}: {weights.name}, the weights of {MODEL_XML}, is missing; {fix}")
    missing = [name for name in TOKENIZER_IRS if not (model_dir / name).is_file()]
    if missing:
        raise ValueError(
            f"{model_dir} has no tokenizer IRs ({choices(missing)} missing; openvino-tokenizers writes them); {fix}"
        )
    layers = _ir_layers(xml, fix)
    if not any(layer.get("type") == "Result" for layer in layers):
        raise ValueError(f"{xml} is an IR without outputs (a truncated graph); {fix}")
    size = weights.stat().st_size
    for layer in layers:
        data = layer.find("data")
        if layer.get("type") == "Const" and data is not None and data.get("offset") is not None:
            if int(data.get("offset")) + int(data.get("size", 0)) > size:
                raise ValueError(f"{weights} is truncated (constant {layer.get('name')} runs past its end); {fix}")


def weight_summary(model_dir: Path) -> dict[str, Any]:
    """What NNCF compressed, read from the IR: the element type of each MatMul's and embedding
    Gather's weight constant (u8/i8 int8, u4/i4 int4, f32/f16 float), the output layer's (the
    MatMul that gives `logits`) and the embedding's in particular."""
    import openvino as ov

    model = ov.Core().read_model(model_dir / MODEL_XML)

    def weight_type(node) -> Optional[str]:
        # up from the weight input through NNCF's decompression, Convert, Subtract (its zero
        # point), Multiply (its scale), Reshape (its groups), each with the weights first
        here = node.input_value(0 if node.get_type_name() == "Gather" else 1).get_node()
        while here.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape"):
            here = here.input_value(0).get_node()
        if here.get_type_name() != "Constant":
            return None
        name = here.get_element_type().get_type_name()
        return {"u8": "int8", "i8": "int8", "u4": "int4", "i4": "int4"}.get(name, name)

    ops = model.get_ordered_ops()
    matmuls = [n for n in ops if n.get_type_name() == "MatMul"]
    types = [weight_type(n) for n in matmuls]
    logits = model.output("logits").get_node().input_value(0).get_node()
    # the embedding: the Gather that looks up `input_ids`
    embedding = next((n for n in ops if n.get_type_name() == "Gather" and _reads_input_ids(n)), None)
    return {
        "matmuls": dict(Counter(t for t in types if t)),
        "output_layer": weight_type(logits) if logits.get_type_name() == "MatMul" else None,
        "embedding": weight_type(embedding) if embedding is not None else None,
    }


def _reads_input_ids(gather) -> bool:
    node = gather.input_value(1).get_node()
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Parameter" and node.get_friendly_name() == "input_ids"
