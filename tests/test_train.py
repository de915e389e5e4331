"""Fine-tuning on the tiny Llama: prompt masking, LoRA and QLoRA adapters that peft loads,
and the merged checkpoint."""

from __future__ import annotations

import json

import pytest

from harness.data.config import DatasetConfig
from harness.train.config import TrainConfig
from harness.data.dataset import build_dataset
from harness.prompt import answer
from harness.train.lora import IGNORE_INDEX, encode_example, merge_adapter, train_adapter


def test_only_answer_tokens_carry_loss(smollm2_tokenizer):
    ids, labels = encode_example(smollm2_tokenizer, "where is my order", "order_status", "Classify.", max_len=96)
    answer_len = sum(label != IGNORE_INDEX for label in labels)
    assert len(ids) == len(labels) and 0 < answer_len < len(ids)
    supervised = smollm2_tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE_INDEX])
    assert supervised == answer("order_status") + smollm2_tokenizer.eos_token


def test_long_prompts_are_cut_from_the_left_keeping_the_answer(smollm2_tokenizer):
    ids, labels = encode_example(smollm2_tokenizer, "very long query " * 50, "other", "Classify.", max_len=32)
    assert len(ids) <= 32 and labels[-1] != IGNORE_INDEX


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapter_trains_saves_and_merges(method, tiny_llama, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = build_dataset(DatasetConfig(train_per_cell=1, validation_per_cell=1, test_per_cell=1), ["en"], tmp_path)
    cfg = TrainConfig(method=method, max_steps=3, batch_size=4, r=4, alpha=8)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    train_adapter(tiny_llama, data, cfg, "Classify.", "cpu", adapter)
    log = json.loads((adapter / "train_log.json").read_text())
    assert log["method"] == method and log["steps"] == 3 and len(log["loss"]) == 3
    assert all(loss > 0 for loss in log["loss"])

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    PeftModel.from_pretrained(base, adapter)  # a standard peft directory
    merged = tmp_path / "merged"
    merged.mkdir()
    merge_adapter(tiny_llama, adapter, merged)
    plain = AutoModelForCausalLM.from_pretrained(merged)
    before = AutoModelForCausalLM.from_pretrained(tiny_llama)
    changed = [
        name for name, p in plain.named_parameters() if not torch.equal(p, dict(before.named_parameters())[name])
    ]
    assert changed and all("proj" in name for name in changed)
