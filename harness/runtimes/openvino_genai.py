"""OpenVINO models (the stateful IR OpenVINO GenAI opens: `openvino_model.xml` with its
tokenizer IRs) on OpenVINO's CPU plugin, one infer request per step.

OpenVINO GenAI's `LLMPipeline` gives no per-step logits, so the model is compiled directly
(`ov.Core`), as the pipeline compiles it, and each step's logits of the last position go to
the harness's own choice (`constrain.pick`): a label-constrained answer is chosen by the
very code that chooses it on llama.cpp. The prompt is the harness's rendered text, tokenized
by OpenVINO GenAI's tokenizer (the IR openvino-tokenizers wrote) with no special tokens and
no chat template of its own added.

Each query starts from an empty state, as llama.cpp's batch-1 pass does: no prefix cache.
(OpenVINO GenAI's CPU pipeline turns prefix caching on by default, which flatters prefill
and holds the cached blocks in memory: its peak RSS grew from 190 to 708 MiB over 156 queries
in the issue's trial.) Batch 1 only: the stateful model takes a batch with `beam_idx`, but
not yet here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from harness.errors import ConfigError
from harness.hardware import HardwareConfig
from harness.runtimes.constrain import pick


def compile_properties(threads: int) -> dict:
    """The CPU plugin's settings for one request at a time on `threads` threads."""
    return {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


def last_position_logits(model) -> None:
    """Compute the output layer on the last position only (what OpenVINO GenAI does to the
    model it compiles): a prompt's prefill does not multiply every position by the vocabulary."""
    import numpy as np
    from openvino import opset13

    head = model.output("logits").get_node().input_value(0).get_node()
    if head.get_type_name() != "MatMul":
        return
    hidden = head.input_value(0)
    last = opset13.slice(
        hidden, np.array([-1]), np.array([np.iinfo(np.int64).max]), np.array([1]), np.array([1], dtype=np.int64)
    )
    head.input(0).replace_source_output(last.output(0))
    model.validate_nodes_and_infer_types()


class OpenVINORuntime:
    name = "openvino"
    kernel_choice = None

    def __init__(self, model_dir: Path, hardware: HardwareConfig, threads: int):
        import numpy as np
        import openvino as ov
        import openvino_genai

        from harness.formats.openvino import MODEL_XML, ir_files

        if hardware.device != "cpu":
            raise ConfigError(
                f"hardware={hardware.device} with an OpenVINO model: this harness runs OpenVINO's CPU plugin only; "
                "use hardware=cpu"
            )
        self.np = np
        self.version = ov.__version__.split("-")[0]
        core = ov.Core()
        model = core.read_model(model_dir / MODEL_XML)
        last_position_logits(model)
        compiled = core.compile_model(model, "CPU", compile_properties(threads))
        self.request = compiled.create_infer_request()
        # what the plugin chose for this CPU (bf16 where it has AMX or AVX-512 bf16; a u8 KV cache)
        precision, kv = (
            compiled.get_property(p).get_type_name() for p in ("INFERENCE_PRECISION_HINT", "KV_CACHE_PRECISION")
        )
        self.kernel = f"CPU plugin, {precision} inference, {kv} KV cache"
        self.tokenizer = openvino_genai.Tokenizer(str(model_dir))
        self.eos_ids = eos_ids(model_dir)
        self.devices = ["cpu"]
        self.model_mib = sum(p.stat().st_size for p in ir_files(model_dir)) / 2**20
        self.position = 0
        self.beam = np.zeros(1, dtype=np.int32)

    def tokenize(self, text: str) -> list[int]:
        # The prompt text already holds the chat template's special tokens, read as such.
        return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if ids else ""

    def _next(self, ids: list[int], allowed: Optional[frozenset[int]]) -> int:
        np, n = self.np, len(ids)
        inputs = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, self.position + n), dtype=np.int64),
            "position_ids": np.arange(self.position, self.position + n, dtype=np.int64)[None],
            "beam_idx": self.beam,
        }
        self.request.infer(inputs, share_inputs=True, share_outputs=True)
        self.position += n
        # a view of the request's output: nothing copied, constrained or not
        return pick(self.request.get_tensor("logits").data.reshape(-1), allowed)

    def start(self, prompt_ids: list[int], allowed: Optional[frozenset[int]] = None) -> int:
        self.request.reset_state()
        self.position = 0
        return self._next(prompt_ids, allowed)

    def step(self, token: int, allowed: Optional[frozenset[int]] = None) -> int:
        return self._next([token], allowed)


def eos_ids(model_dir: Path) -> set[int]:
    """The end-of-turn tokens: the generation config's (as OpenVINO GenAI reads them), else the
    model config's."""
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        eos = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
        if eos is not None:
            return set(eos if isinstance(eos, list) else [eos])
    raise ValueError(f"{model_dir}: no eos_token_id in generation_config.json or config.json")
