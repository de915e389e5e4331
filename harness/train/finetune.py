"""Fine-tuning on the training split: full, LoRA or QLoRA, and merging an adapter into the
base weights.

QLoRA (the study's method) loads the frozen base in 4-bit NF4 with bitsandbytes (CPU or
CUDA) and trains LoRA adapters on top; `lora` keeps the base in full precision; either way
the adapter is merged into the full-precision base, as QLoRA users do before quantizing
for deployment. `full` trains every weight, which a 135M model affords on a CPU (weights,
gradients and AdamW's two moments: about 2 GiB in fp32). The loss covers only the answer
tokens: the prompt (system message, chat markup, query) is masked, so the model learns to
answer, not to reproduce queries.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from harness import live
from harness.data.dataset import read_split
from harness.hardware import cuda_capability
from harness.measure.machine import local_cpu_facts
from harness.prompt import answer, render_prompt, reusable_prefix
from harness.train.config import TrainConfig

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
# Part of the trained weights' cache key: a change to how training computes is a new model
# (2: the shared prompt prefix runs once per batch and AdamW is fused, both of which reorder
# floating-point sums).
TRAINING_VERSION = 2
# One training example: its token ids and its labels (the prompt masked with IGNORE_INDEX).
Example = tuple[list[int], list[int]]


def encode_example(tokenizer, query: str, label: str, system: str, max_len: int) -> Example:
    """(input ids, labels) with the prompt masked; truncated from the left of the prompt so
    the answer always survives."""
    prompt_ids = tokenizer(render_prompt(tokenizer, query, system), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer(label) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    prompt_ids = prompt_ids[-max(1, max_len - len(answer_ids)) :]
    ids = prompt_ids + answer_ids
    return ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random, window: int = 32) -> list[list[int]]:
    """Example indices in batches of similar length, in random order: shuffled, sorted by
    length within windows of `window` batches, cut, and the batches shuffled. Padding is
    compute thrown away; this wastes little of it and still mixes the data."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        part = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def shared_prefix(examples: Sequence[Example]) -> list[int]:
    """The tokens every example starts with (the chat markup and system message before the
    query), short of each example's last prompt token, which predicts its answer's first."""
    prompts = [ids[: sum(1 for t in labels if t == IGNORE_INDEX)] for ids, labels in examples]
    return examples[0][0][: reusable_prefix(prompts)]


def collate(chunk: Sequence[Example], pad_id: int, prefix_len: int = 0):
    """(ids, labels, attention mask, position ids) tensors of each example after its first
    `prefix_len` tokens (a prefix they all share, see `answer_logits`), left-padded to the longest,
    so that every answer ends at the last position and the logits worth computing are a
    window at the end (see `answer_window`)."""
    import torch

    chunk = [(ids[prefix_len:], labels[prefix_len:]) for ids, labels in chunk]
    width = max(len(ids) for ids, _ in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, (x, y) in enumerate(chunk):
        ids[row, width - len(x) :] = torch.tensor(x)
        labels[row, width - len(y) :] = torch.tensor(y)
        mask[row, width - len(x) :] = 1
    # Positions count from each example's first token (the cut prefix's included), as if it
    # were alone.
    positions = prefix_len + (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, labels, mask, positions


def answer_window(labels) -> int:
    """How many positions at the end of a left-padded batch hold every logit the loss needs:
    the longest answer, plus the prompt's last token (which predicts the answer's first)."""
    return int((labels != IGNORE_INDEX).sum(dim=1).max()) + 1


def answer_logits(model, ids, mask, positions, window: int, prefix_ids=None):
    """The logits of the last `window` positions only. The output layer (vocabulary x
    hidden, a fifth of a small model's weights) then runs on the answer, not on every
    prompt token, in the forward and the backward pass.

    `prefix_ids` (the tokens every row of the batch starts with, cut off by `collate`) run
    once, not once per row: their keys and values, the same for every row of a causal model,
    are repeated across the batch, and the backward pass sums each row's gradient into them.
    The loss and gradients are those of the rows run whole (with LoRA dropout in training,
    the prefix's dropout mask is shared by the rows: the same expectation, not the same
    draw). A third of a short query's tokens are the shared chat markup and system message."""
    if prefix_ids is None or not len(prefix_ids):
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=window).logits
    import torch

    # logits_to_keep=1: the prefix's own logits are never used; only its keys and values are.
    cache = model(input_ids=prefix_ids[None], use_cache=True, logits_to_keep=1).past_key_values
    cache.batch_repeat_interleave(ids.shape[0])
    mask = torch.cat([mask.new_ones(ids.shape[0], len(prefix_ids)), mask], dim=1)
    return model(
        input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, logits_to_keep=window
    ).logits


def answer_loss(logits, labels):
    """Mean cross-entropy over the answer tokens of a window of logits (`answer_logits`) and
    the batch's labels: each position predicts the next token."""
    import torch.nn.functional as F

    gold = labels[:, -logits.shape[1] :][:, 1:]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), gold.flatten(), ignore_index=IGNORE_INDEX)


def answer_match(logits, labels, eos_id: int) -> list[bool]:
    """Per example: is every answer token the argmax given the gold tokens before it? This is
    exactly "greedy decoding writes the gold answer", at the cost of one forward pass. The
    end-of-turn token is left out: decoding stops at the closing brace before it. `logits`
    may be a window at the end (`answer_logits`)."""
    predicted = logits[:, :-1].argmax(-1)
    gold = labels[:, -logits.shape[1] :][:, 1:]
    scored = (gold != IGNORE_INDEX) & (gold != eos_id)
    return (((predicted == gold) | ~scored).all(dim=1)).tolist()


def best_index(accuracies: Sequence[float]) -> int:
    """The evaluation whose adapter to keep: the best score, the later one on a tie (it has
    seen more data for the same validation score)."""
    top = max(accuracies)
    return max(i for i, a in enumerate(accuracies) if a == top)


def resolve_precision(
    precision: str, device: str, cpu_flags: Sequence[str], capability: Optional[tuple[int, int]] = None
) -> str:
    """fp32, bf16 or fp16: `auto` takes a 16-bit autocast only where the hardware computes it
    natively. On a CPU that is bf16 with AMX or AVX512-BF16 (elsewhere emulated, slower than
    fp32); on a GPU of compute capability `capability`, bf16 from Ampere on and fp16 before."""
    if precision != "auto":
        return precision
    if device == "cuda":
        from harness.hardware import gpu_half_precision

        assert capability is not None, "a CUDA device's compute capability decides its precision"
        return gpu_half_precision(capability)
    return "bf16" if {"amx_bf16", "avx512_bf16"} & set(cpu_flags) else "fp32"


def _trainable_base(base_dir: Path, method: str, device: str):
    import torch
    from transformers import AutoModelForCausalLM

    from harness.formats.bnb import bnb_config, compute_dtype

    if method == "full":
        # The trained weights themselves: fp32 masters (train.precision picks autocast), so the
        # saved model is full precision on a GPU too.
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device)
    if method == "lora":
        # bf16 halves memory and doubles speed on GPUs; CPUs train more reliably in fp32. The
        # frozen base's dtype does not reach the merge, which loads the base in fp32.
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=compute_dtype(device)).to(device)
    from peft import prepare_model_for_kbit_training

    model = AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=bnb_config(4, device), dtype=compute_dtype(device), device_map=device
    )
    # Never call generate() on this model before training: bitsandbytes repacks 4-bit
    # weights for inference on first use, which breaks the backward pass.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


@dataclass
class Trainee:
    """The model in training and what every forward pass needs: its device, the autocast of
    its precision, the loss scaler, the padding id and the prompts' shared prefix."""

    model: Any
    device: str
    precision: str
    autocast: Any
    scaler: Any
    pad_id: int
    eos_id: int
    prefix: Any = None

    def forward(self, examples: list[Example]) -> tuple[Any, Any]:
        """(answer logits, labels) of a batch; the caller holds the autocast."""
        ids, labels, mask, positions = (t.to(self.device) for t in collate(examples, self.pad_id, len(self.prefix)))
        return answer_logits(self.model, ids, mask, positions, answer_window(labels), self.prefix), labels


def _trainee(base_dir: Path, cfg: TrainConfig, device: str, tokenizer: Any) -> Trainee:
    import contextlib

    import torch
    from peft import LoraConfig, get_peft_model

    model = _trainable_base(base_dir, cfg.method, device)
    if cfg.method != "full":
        lora = LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    capability = cuda_capability() if device == "cuda" else None
    precision = resolve_precision(cfg.precision, device, local_cpu_facts()["flags"], capability)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device_type=device, dtype=half) if half else contextlib.nullcontext()
    # fp16's narrow range underflows small gradients: the loss is scaled up before backward
    # and the gradients down before the step (a no-op for fp32 and bf16).
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Trainee(model, device, precision, autocast, scaler, pad_id, tokenizer.eos_token_id)


def planned_steps(cfg: TrainConfig, n_examples: int) -> tuple[int, list[int]]:
    """(optimizer steps, the steps after which validation is scored)."""
    steps_per_epoch = math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum))
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, round(cfg.epochs * steps_per_epoch))
    return total, sorted({max(1, round(total * k / cfg.evaluations)) for k in range(1, cfg.evaluations + 1)})


def validation_accuracy(t: Trainee, validation: list[Example], batch_size: int) -> float:
    """Greedy exact match of each validation answer, by teacher forcing."""
    import torch

    t.model.eval()
    hits: list[bool] = []
    with torch.inference_mode(), t.autocast:
        for chunk in bucketed_batches([len(x) for x, _ in validation], batch_size, random.Random(0)):
            logits, labels = t.forward([validation[i] for i in chunk])
            hits += answer_match(logits, labels, t.eos_id)
    t.model.train()
    return sum(hits) / len(hits)


def _optimizer(t: Trainee, cfg: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW over the trained weights, with linear warm-up over a tenth of the steps and decay."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    # fused: one kernel over all parameters instead of a loop of element-wise ops (one profile
    # on 2 cores: the optimizer step of a 135M model 0.2 s against 0.5 s).
    trained = [p for p in t.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=cfg.learning_rate, fused=True)
    return optimizer, get_linear_schedule_with_warmup(optimizer, max(1, total_steps // 10), total_steps)


def _step(t: Trainee, optimizer: Any, batches: list[list[Example]], max_grad_norm: float) -> float:
    """One optimizer step over `batches` (gradient accumulation); the step's loss."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    step_loss = 0.0
    for batch in batches:
        with t.autocast:
            logits, labels = t.forward(batch)
            loss = answer_loss(logits, labels) / len(batches)
        t.scaler.scale(loss).backward()
        step_loss += loss.item()
    if max_grad_norm:
        t.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), max_grad_norm)
    t.scaler.step(optimizer)
    t.scaler.update()
    return step_loss


def shuffled_batches(examples: list[Example], batch_size: int, rng: random.Random) -> Iterator[list[Example]]:
    """Batches of similar length without end: each pass over the examples in a new order."""
    assert examples, "no examples to batch"
    lengths = [len(ids) for ids, _ in examples]
    while True:
        order = bucketed_batches(lengths, batch_size, rng)
        while order:
            yield [examples[i] for i in order.pop()]


def _encoded(tokenizer: Any, data_dir: Path, split: str, system: str, max_len: int) -> list[Example]:
    return [encode_example(tokenizer, r["text"], r["intent"], system, max_len) for r in read_split(data_dir, split)]


def _show_step(bar: Any, step: int, loss: float, learning_rate: float, kept: BestKept) -> None:
    """The step on the progress bar (with the last validation score) and to the live run."""
    shown = {"val": f"{kept.curve[-1]['accuracy']:.3f}"} if kept.curve else {}
    bar.update(1, loss=f"{loss:.4f}", **shown)
    live.emit({"train/step": step, "train/loss": loss, "train/learning_rate": learning_rate})


def _validated_to_stop(t: Trainee, validation: list[Example], cfg: TrainConfig, step: int, kept: BestKept) -> bool:
    """Score the validation split and keep the weights if best; True when training should stop."""
    accuracy = validation_accuracy(t, validation, cfg.batch_size * 2)
    live.emit({"train/step": step, "train/validation_accuracy": accuracy})
    if kept.score(step, accuracy, t.model):
        log.info("validation below its best for %d evaluations: stopping at step %d", cfg.patience, step)
        return True
    return False


def train(base_dir: Path, data_dir: Path, cfg: TrainConfig, system: str, device: str, out: Path) -> None:
    """Fine-tune and save what was trained into `out` with train_log.json: a (Q)LoRA adapter
    (a standard peft directory), or for `full` the whole model (a standard checkpoint). With
    `cfg.evaluations`, the validation split is scored along the way and the best-scoring
    weights are the ones saved; `cfg.patience` evaluations without improvement stop it."""
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    t = _trainee(base_dir, cfg, device, tokenizer)
    examples = _encoded(tokenizer, data_dir, "train", system, cfg.max_seq_len)
    validation = _encoded(tokenizer, data_dir, "validation", system, cfg.max_seq_len) if cfg.evaluations else []
    total_steps, eval_steps = planned_steps(cfg, len(examples))
    optimizer, scheduler = _optimizer(t, cfg, total_steps)
    # One example whose prompt was cut from the left (longer than max_seq_len) empties it.
    t.prefix = torch.tensor(shared_prefix(examples + validation), dtype=torch.long, device=device)
    log.info("shared prompt prefix: %d tokens, run once per batch", len(t.prefix))
    batches = shuffled_batches(examples, cfg.batch_size, random.Random(cfg.seed))
    losses: list[float] = []
    kept = BestKept(cfg.patience)
    started = time.perf_counter()
    t.model.train()
    with live.Progress(total_steps, f"fine-tune ({cfg.method}, {t.precision})", "step") as bar:
        for step in range(1, total_steps + 1):
            losses.append(_step(t, optimizer, [next(batches) for _ in range(cfg.grad_accum)], cfg.max_grad_norm))
            scheduler.step()
            _show_step(bar, step, losses[-1], scheduler.get_last_lr()[0], kept)
            if validation and step in eval_steps and _validated_to_stop(t, validation, cfg, step, kept):
                break
    facts = {
        "method": cfg.method,
        "device": device,
        "precision": t.precision,
        "steps": len(losses),
        "planned_steps": total_steps,
        "examples": len(examples),
        "training_version": TRAINING_VERSION,
        "shared_prefix_tokens": len(t.prefix),
        "train_wall_s": time.perf_counter() - started,
        "loss": losses,
    }
    _save(t, tokenizer, kept, out, facts)


@dataclass
class BestKept:
    """The validation scores over training, a copy of the best-scoring weights, and when to
    stop: `patience` scores in a row below the best (0: never)."""

    patience: int
    curve: list[dict] = field(default_factory=list)
    weights: Optional[dict] = None

    def score(self, step: int, accuracy: float, model: Any) -> bool:
        """Record a score; True when training should stop."""
        self.curve.append({"step": step, "accuracy": accuracy})
        since_best = len(self.curve) - 1 - best_index([c["accuracy"] for c in self.curve])
        if since_best == 0:
            # on the CPU: for full fine-tuning on a GPU this is a second copy of the model
            self.weights = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        return bool(self.patience and since_best >= self.patience)

    @property
    def best(self) -> Optional[dict]:
        return self.curve[best_index([c["accuracy"] for c in self.curve])] if self.curve else None


def _save(t: Trainee, tokenizer: Any, kept: BestKept, out: Path, facts: dict) -> None:
    """The best evaluation's weights (or the last ones) into `out`, with train_log.json."""
    import torch

    if kept.weights is not None:
        with torch.no_grad():
            for n, p in t.model.named_parameters():
                if n in kept.weights:
                    p.copy_(kept.weights[n])
    t.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    best = kept.best
    log_data = {
        **facts,
        "s_per_step": facts["train_wall_s"] / facts["steps"],
        "validation": kept.curve,
        "kept_step": best["step"] if best else facts["steps"],
        "validation_accuracy": best["accuracy"] if best else None,
    }
    (out / "train_log.json").write_text(json.dumps(log_data, indent=2))


def fine_tune(base_dir: Path, data_dir: Path, cfg: TrainConfig, system: str, device: str, out: Path) -> None:
    """The fine-tuning stage: the full-precision model in `out/merged` (the adapter merged into
    the base, or the fully trained model itself) and the training log in `out/adapter`, beside
    the adapter where there is one."""
    (out / "adapter").mkdir()
    (out / "merged").mkdir()
    if cfg.method == "full":
        train(base_dir, data_dir, cfg, system, device, out / "merged")
        (out / "merged" / "train_log.json").rename(out / "adapter" / "train_log.json")
        return
    train(base_dir, data_dir, cfg, system, device, out / "adapter")
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
