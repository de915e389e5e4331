"""LoRA and QLoRA fine-tuning on the training split, and merging the adapter into the base
weights.

QLoRA (the study's method) loads the frozen base in 4-bit NF4 with bitsandbytes (CPU or
CUDA) and trains LoRA adapters on top; `lora` keeps the base in full precision. Either way
the adapter is merged into the full-precision base, as QLoRA users do before quantizing
for deployment. The loss covers only the answer tokens: the prompt (system message, chat
markup, query) is masked, so the model learns to answer, not to reproduce queries.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Sequence

from harness.data.dataset import read_split
from harness.prompt import answer, render_prompt
from harness.train.config import TrainConfig

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


def encode_example(tokenizer, query: str, label: str, system: str, max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) with the prompt masked; truncated from the left of the prompt so
    the answer always survives."""
    prompt_ids = tokenizer(render_prompt(tokenizer, query, system), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer(label) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    prompt_ids = prompt_ids[-max(1, max_len - len(answer_ids)) :]
    ids = prompt_ids + answer_ids
    return ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def _batches(examples: Sequence[tuple[list[int], list[int]]], batch_size: int, pad_id: int, rng: random.Random):
    import torch

    order = list(range(len(examples)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start : start + batch_size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (x, y) in enumerate(chunk):
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        yield ids, labels, mask


def _trainable_base(base_dir: Path, method: str, device: str):
    from transformers import AutoModelForCausalLM

    from harness.formats.bnb import bnb_config, compute_dtype

    if method == "lora":
        # bf16 halves memory and doubles speed on GPUs; CPUs train more reliably in fp32.
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=compute_dtype(device)).to(device)
    from peft import prepare_model_for_kbit_training

    model = AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=bnb_config(4, device), dtype=compute_dtype(device), device_map=device
    )
    # Never call generate() on this model before training: bitsandbytes repacks 4-bit
    # weights for inference on first use, which breaks the backward pass.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def train_adapter(base_dir: Path, data_dir: Path, cfg: TrainConfig, system: str, device: str, out: Path) -> None:
    """Train a (Q)LoRA adapter and save it (a standard peft directory) with train_log.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = _trainable_base(base_dir, cfg.method, device)
    model = get_peft_model(
        model,
        LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    rows = read_split(data_dir, "train")
    examples = [encode_example(tokenizer, r["text"], r["intent"], system, cfg.max_seq_len) for r in rows]
    steps_per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.grad_accum))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, round(cfg.epochs * steps_per_epoch))

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total_steps // 10), total_steps)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(cfg.seed)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    step = 0
    batches = iter(())
    with tqdm(total=total_steps, desc=f"fine-tune ({cfg.method})", unit="step") as bar:
        while step < total_steps:
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for _ in range(cfg.grad_accum):
                batch = next(batches, None)
                if batch is None:
                    batches = _batches(examples, cfg.batch_size, pad_id, rng)
                    batch = next(batches)
                ids, labels, mask = (t.to(device) for t in batch)
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / cfg.grad_accum
                loss.backward()
                step_loss += loss.item()
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(step_loss)
            bar.set_postfix(loss=f"{step_loss:.4f}")
            bar.update()

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log_data = {
        "method": cfg.method,
        "device": device,
        "steps": total_steps,
        "examples": len(examples),
        "train_wall_s": time.perf_counter() - started,
        "loss": losses,
    }
    (out / "train_log.json").write_text(json.dumps(log_data, indent=2))


def fine_tune(base_dir: Path, data_dir: Path, cfg: TrainConfig, system: str, device: str, out: Path) -> None:
    """The fine-tuning stage: the adapter in `out/adapter`, merged into the base in `out/merged`."""
    (out / "adapter").mkdir()
    (out / "merged").mkdir()
    train_adapter(base_dir, data_dir, cfg, system, device, out / "adapter")
    merge_adapter(base_dir, out / "adapter", out / "merged")


def merge_adapter(base_dir: Path, adapter_dir: Path, out: Path) -> None:
    """Fold the adapter into the base weights: a plain safetensors checkpoint."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out)
