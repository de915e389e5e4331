"""A Hugging Face causal LM as the stateful OpenVINO IR that OpenVINO GenAI's `LLMPipeline`
opens, with OpenVINO's own tools: `openvino.convert_model` traces the torch model (its KV
cache passed in and out as tensors), then the cache inputs and outputs are joined into the
model's state (`apply_make_stateful_transformation`), reordered by a `beam_idx` input and
zero-initialised by the batch, as optimum-intel's exporter does (`patch_stateful`). Runs in
the build's own process (torch and transformers are imported here only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CACHE_INPUT, CACHE_OUTPUT = "past_key_values.{}.{}", "present.{}.{}"
NOT_CACHE = ("input_ids", "attention_mask", "position_ids")


def _traceable(model):
    """`model` as a module of plain tensors: (input_ids, attention_mask, position_ids, each
    layer's past key and value) -> (logits, each layer's present key and value)."""
    import torch
    from transformers import DynamicCache

    class Traceable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=model.config)
            for i, layer in enumerate(cache.layers):
                # set the past as the layer's contents (not appended to an empty tensor, which
                # the trace would keep as a rank-1 constant)
                layer.lazy_initialization(past[2 * i], past[2 * i + 1])
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            return (out.logits, *(t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)))

    return Traceable()


def stateful_ir(source: Path):
    """The checkpoint `source` (fp32) as a stateful OpenVINO model."""
    import openvino as ov
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, attn_implementation="sdpa").eval()
    config = model.config
    layers, kv_heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    # a trace with a past and several new tokens, so neither length is taken for a constant
    past_len, new = 2, 3
    example = (
        torch.ones(1, new, dtype=torch.long),
        torch.ones(1, past_len + new, dtype=torch.long),
        torch.arange(past_len, past_len + new).unsqueeze(0),
        *(torch.zeros(1, kv_heads, past_len, head_dim) for _ in range(2 * layers)),
    )
    shapes = [ov.PartialShape([-1, -1])] * 3 + [ov.PartialShape([-1, kv_heads, -1, head_dim])] * (2 * layers)
    with torch.no_grad():
        ir = ov.convert_model(_traceable(model), example_input=example, input=shapes)
    cache = [(i, kv) for i in range(layers) for kv in ("key", "value")]
    inputs = [*NOT_CACHE, *(CACHE_INPUT.format(*c) for c in cache)]
    outputs = ["logits", *(CACHE_OUTPUT.format(*c) for c in cache)]
    for port, name in [*zip(ir.inputs, inputs), *zip(ir.outputs, outputs)]:
        port.get_tensor().set_names({name})
    _reorder_cache_by_beam(ir, inputs[len(NOT_CACHE) :])
    _make_stateful(ir, dict(zip(inputs[len(NOT_CACHE) :], outputs[1:])))
    return ir


def _reorder_cache_by_beam(ir, cache_inputs: list[str]) -> None:
    """A `beam_idx` input that picks each sequence's cache by its row (OpenVINO GenAI feeds it)."""
    import openvino as ov
    from openvino import opset13

    beam = opset13.parameter(ov.PartialShape([-1]), ov.Type.i32, name="beam_idx")
    beam.output(0).get_tensor().set_names({"beam_idx"})
    ir.add_parameters([beam])
    for name in cache_inputs:
        port = ir.input(name)
        consumers = port.get_target_inputs()
        gathered = opset13.gather(port, beam, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    ir.validate_nodes_and_infer_types()


def _make_stateful(ir, cache: dict[str, str]) -> None:
    """The cache inputs and outputs as the model's state, which starts as zeros of no length
    for as many sequences as `input_ids` has rows."""
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    apply_make_stateful_transformation(ir, cache)
    ids = ir.input("input_ids")
    batch = opset13.gather(opset13.shape_of(ids, output_type="i64"), opset13.constant([0]), opset13.constant(0))
    for op in ir.get_ops():
        if op.get_type_name() == "ReadValue":
            dims = [d.min_length for d in op.get_output_partial_shape(0)]
            dims[0] = batch
            parts = [opset13.constant(np.array([d], dtype=np.int64)) if isinstance(d, int) else d for d in dims]
            zero = opset13.constant(0.0, dtype=op.get_output_element_type(0))
            zeros = opset13.broadcast(zero, opset13.concat(parts, 0))
            op.set_arguments([zeros])
    ir.validate_nodes_and_infer_types()


def save_tokenizer_irs(source: Path, out: Path) -> None:
    """openvino-tokenizers' tokenizer and detokenizer IRs of the checkpoint's tokenizer."""
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    tokenizer, detokenizer = convert_tokenizer(AutoTokenizer.from_pretrained(source), with_detokenizer=True)
    ov.save_model(tokenizer, out / "openvino_tokenizer.xml")
    ov.save_model(detokenizer, out / "openvino_detokenizer.xml")


def calibration_inputs(source: Path, texts: list[str]) -> list[dict]:
    """The stateful model's inputs for each calibration text, prefilled whole from an empty
    state (NNCF resets a stateful model's state before each)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    items = []
    for text in texts:
        ids = np.array([tokenizer(text, add_special_tokens=False)["input_ids"]], dtype=np.int64)
        n = ids.shape[1]
        items.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones((1, n), dtype=np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None],
                "beam_idx": np.zeros(1, dtype=np.int32),
            }
        )
    return items
