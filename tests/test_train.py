"""Fine-tuning on the tiny Llama: prompt masking, LoRA and QLoRA adapters that peft loads,
and the merged checkpoint."""

from __future__ import annotations

import json
import math

import pytest

from harness.data.config import DatasetConfig
from harness.data.dataset import build_dataset
from harness.prompt import answer
from harness.train.config import TrainConfig
from harness.train.finetune import IGNORE_INDEX, encode_example, merge_adapter, train

# Three labelled queries whose prompts are three different lengths (batches need padding).
THREE_LENGTHS = [
    ("hi", "other"),
    ("where is my order #123456 it is late", "order_status"),
    ("refund?", "refund_status"),
]


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
    train(tiny_llama, data, cfg, "Classify.", "cpu", adapter)
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


def test_full_fine_tuning_trains_every_weight_and_keeps_the_best(tiny_llama, tmp_path, monkeypatch):
    """The fine-tuning stage with train.method=full: a plain checkpoint whose every weight
    moved, the training log beside it, and the weights of the best evaluation kept (the
    saved model scores on validation what the log says it scored; when the first evaluation
    is the best, the saved weights are not the last ones)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import harness.train.finetune as finetune
    from harness.data.dataset import read_split
    from harness.train.finetune import answer_logits, answer_match, answer_window, collate, fine_tune

    data = build_dataset(DatasetConfig(train_per_cell=2, validation_per_cell=1, test_per_cell=1), ["en"], tmp_path)
    cfg = TrainConfig(method="full", learning_rate=1e-3, max_steps=6, batch_size=4, evaluations=3, patience=0)
    out = tmp_path / "tuned"
    out.mkdir()
    fine_tune(tiny_llama, data, cfg, "Classify.", "cpu", out)
    log = json.loads((out / "adapter" / "train_log.json").read_text())
    assert log["method"] == "full" and log["steps"] == 6 and len(log["validation"]) == 3
    tuned = AutoModelForCausalLM.from_pretrained(out / "merged")
    before = dict(AutoModelForCausalLM.from_pretrained(tiny_llama).named_parameters())
    assert all(not torch.equal(p, before[name]) for name, p in tuned.named_parameters())

    tok = AutoTokenizer.from_pretrained(out / "merged")
    rows = read_split(data, "validation")
    batch = collate([encode_example(tok, r["text"], r["intent"], "Classify.", 96) for r in rows], tok.pad_token_id)
    ids, labels, mask, positions = batch
    with torch.no_grad():
        hits = answer_match(answer_logits(tuned, ids, mask, positions, answer_window(labels)), labels, tok.eos_token_id)
    assert sum(hits) / len(hits) == log["validation_accuracy"]

    monkeypatch.setattr(finetune, "best_index", lambda accuracies: 0)
    early = tmp_path / "early"
    early.mkdir()
    fine_tune(tiny_llama, data, cfg, "Classify.", "cpu", early)
    assert json.loads((early / "adapter" / "train_log.json").read_text())["kept_step"] == 2
    kept = dict(AutoModelForCausalLM.from_pretrained(early / "merged").named_parameters())
    assert all(not torch.equal(p, kept[name]) for name, p in tuned.named_parameters())


def test_batches_group_similar_lengths_and_cover_every_example_once():
    import random

    from harness.train.finetune import bucketed_batches

    lengths = [random.Random(i).randrange(10, 90) for i in range(200)]
    batches = bucketed_batches(lengths, batch_size=8, rng=random.Random(0), window=5)
    assert sorted(i for b in batches for i in b) == list(range(200))
    padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    unsorted = [list(range(s, min(s + 8, 200))) for s in range(0, 200, 8)]
    random_padding = sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in unsorted)
    assert padding < random_padding / 3


def test_answer_match_is_greedy_exact_match():
    import torch

    from harness.train.finetune import answer_match

    # vocabulary of 5; example 0 predicts its answer tokens (3, 4) right, example 1 the first only
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, 0], [IGNORE_INDEX, IGNORE_INDEX, 3, 4, 0]])
    logits = torch.zeros(2, 5, 5)
    for row, predicted in enumerate(([3, 4], [3, 2])):
        logits[row, 1, predicted[0]] = logits[row, 2, predicted[1]] = 1.0
    # the end-of-turn token (0) is not scored: decoding stops before it
    assert answer_match(logits, labels, eos_id=0) == [True, False]


def test_precision_auto_takes_bf16_only_where_the_cpu_computes_it():
    from harness.train.finetune import resolve_precision

    assert resolve_precision("auto", "cpu", ["avx2", "fma"]) == "fp32"
    assert resolve_precision("auto", "cpu", ["avx512f", "avx512_bf16"]) == "bf16"
    assert resolve_precision("auto", "cpu", ["amx_bf16", "amx_tile"]) == "bf16"
    assert resolve_precision("bf16", "cpu", ["avx2"]) == "bf16"


def test_fp16_training_scales_its_loss_and_trains(tiny_llama, tmp_path):
    """fp16 autocast, what a pre-Ampere GPU trains in, with its loss scaler; run here on the
    CPU, whose autocast takes fp16 too, so the scaler's steps are the real ones."""
    data = build_dataset(DatasetConfig(train_per_cell=1, validation_per_cell=1, test_per_cell=1), ["en"], tmp_path)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    train(
        tiny_llama,
        data,
        TrainConfig(method="lora", max_steps=2, batch_size=4, r=4, alpha=8, precision="fp16", evaluations=0),
        "Classify.",
        "cpu",
        adapter,
    )
    log = json.loads((adapter / "train_log.json").read_text())
    assert log["precision"] == "fp16" and log["steps"] == 2
    assert all(math.isfinite(loss) and loss > 0 for loss in log["loss"])


def test_the_best_evaluation_is_kept_and_a_tie_goes_to_the_later_one():
    from harness.train.finetune import best_index

    assert best_index([0.5, 0.7, 0.6]) == 1
    assert best_index([0.5, 0.7, 0.7]) == 2
    assert best_index([0.0]) == 0


def test_validation_scores_along_the_way_and_stops_when_it_falls(tiny_llama, tmp_path, monkeypatch):
    import harness.train.finetune as finetune

    data = build_dataset(DatasetConfig(train_per_cell=2, validation_per_cell=1, test_per_cell=1), ["en"], tmp_path)
    cfg = TrainConfig(method="lora", max_steps=8, batch_size=4, r=4, alpha=8, evaluations=4, patience=1)
    # auto precision on a CPU without AVX512-BF16 or AMX
    monkeypatch.setattr(finetune, "local_cpu_facts", lambda: {"flags": ["avx2", "fma"]})

    real = finetune.validation_accuracy

    def trained_with_scores(scores: list[float], name: str) -> dict:
        """Train, the validation scored for real and then reported as `scores`, one per evaluation."""
        scripted = iter(scores)

        def scored(*args) -> float:
            real(*args)  # the validation pass runs as in training; its score is the script's
            return next(scripted)

        monkeypatch.setattr(finetune, "validation_accuracy", scored)
        (tmp_path / name).mkdir()
        train(tiny_llama, data, cfg, "Classify.", "cpu", tmp_path / name)
        return json.loads((tmp_path / name / "train_log.json").read_text())

    log = trained_with_scores([0.25, 0.5, 0.5, 0.4], "adapter")
    assert log["validation"] == [
        {"step": 2, "accuracy": 0.25},
        {"step": 4, "accuracy": 0.5},
        {"step": 6, "accuracy": 0.5},
        {"step": 8, "accuracy": 0.4},
    ]
    # the best score, the later of two equal ones
    assert log["steps"] == 8 and log["kept_step"] == 6 and log["precision"] == "fp32"
    # the first evaluation stays the best: patience 1 stops training at the second
    log2 = trained_with_scores([0.5, 0.25, 0.25, 0.25], "adapter2")
    assert log2["steps"] == 4 and log2["planned_steps"] == 8 and log2["kept_step"] == 2


def test_left_padded_answer_window_gives_each_examples_own_loss_and_matches(smollm2_tokenizer, tmp_path):
    """The training batch: left-padded, position ids from each example's first token, logits
    only for the answer window. Its loss is the token-weighted mean of each example's loss
    computed alone by transformers (no padding, full logits); its exact-match verdicts are
    those of each example alone."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.train.finetune import answer_logits, answer_loss, answer_match, answer_window, collate

    from .conftest import save_tiny_llama

    model = AutoModelForCausalLM.from_pretrained(save_tiny_llama(tmp_path, smollm2_tokenizer, initializer_range=0.2))
    examples = [encode_example(smollm2_tokenizer, q, label, "Classify.", max_len=96) for q, label in THREE_LENGTHS]
    assert len({len(ids) for ids, _ in examples}) == 3
    eos = smollm2_tokenizer.eos_token_id
    with torch.no_grad():
        ids, labels, mask, positions = collate(examples, smollm2_tokenizer.pad_token_id)
        window = answer_window(labels)
        assert window < ids.shape[1] / 2  # the point: most positions need no logits
        logits = answer_logits(model, ids, mask, positions, window)
        alone = [model(input_ids=torch.tensor([x]), labels=torch.tensor([y])) for x, y in examples]
    counts = [sum(t != IGNORE_INDEX for t in y) for _, y in examples]
    expected = sum(out.loss * n for out, n in zip(alone, counts)) / sum(counts)
    assert torch.allclose(answer_loss(logits, labels), expected, rtol=1e-4)
    verdicts = [answer_match(out.logits, torch.tensor([y]), eos)[0] for out, (_, y) in zip(alone, examples)]
    assert answer_match(logits, labels, eos) == verdicts


def test_a_shared_prefix_run_once_gives_every_rows_own_loss_gradients_and_verdicts(smollm2_tokenizer, tmp_path):
    """The chat markup and system message every example starts with run once per batch, their
    keys and values repeated across the rows: the loss, every weight's gradient and the
    exact-match verdicts are those of the rows run whole."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.train.finetune import answer_logits, answer_loss, answer_match, answer_window, collate, shared_prefix

    from .conftest import save_tiny_llama

    model = AutoModelForCausalLM.from_pretrained(save_tiny_llama(tmp_path, smollm2_tokenizer, initializer_range=0.2))
    examples = [
        encode_example(smollm2_tokenizer, q, label, "Classify the query.", max_len=96) for q, label in THREE_LENGTHS
    ]
    prefix = shared_prefix(examples)
    # the whole system turn and the user turn's markup; never a query token
    assert smollm2_tokenizer.decode(prefix).endswith("Classify the query.<|im_end|>\n<|im_start|>user\n")
    pad, eos = smollm2_tokenizer.pad_token_id, smollm2_tokenizer.eos_token_id

    def run(cut):
        model.zero_grad()
        ids, labels, mask, positions = collate(examples, pad, len(cut))
        logits = answer_logits(model, ids, mask, positions, answer_window(labels), torch.tensor(cut, dtype=torch.long))
        loss = answer_loss(logits, labels)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return loss.detach(), grads, answer_match(logits.detach(), labels, eos)

    whole, shared = run([]), run(prefix)
    assert collate(examples, pad, len(prefix))[0].shape[1] == collate(examples, pad)[0].shape[1] - len(prefix)
    assert torch.allclose(shared[0], whole[0], rtol=1e-5)
    for name, grad in whole[1].items():
        # fp32 sums in another order: an element near zero differs by rounding at the tensor's
        # scale (one of 12.6M embedding gradients by 4e-6 of 1.8, with AVX-512 kernels)
        assert torch.allclose(shared[1][name], grad, rtol=1e-3, atol=1e-5 * float(grad.abs().max())), name
    assert shared[2] == whole[2]


def test_the_shared_prefix_stops_before_the_first_token_that_differs_or_predicts():
    from harness.train.finetune import shared_prefix

    a = ([1, 2, 3, 4, 9], [IGNORE_INDEX] * 4 + [9])
    assert shared_prefix([a, ([1, 2, 5, 4, 9], [IGNORE_INDEX] * 4 + [9])]) == [1, 2]
    # identical prompts: the last prompt token stays with each row, to predict its answer
    assert shared_prefix([a, a]) == [1, 2, 3]


def test_the_adapters_shape_keys_lora_but_not_full_fine_tuning():
    from harness.train.config import TrainConfig

    full, lora = TrainConfig(method="full"), TrainConfig(method="lora")
    assert full.key_inputs() == TrainConfig(method="full", r=64, alpha=8, target_modules=["q_proj"]).key_inputs()
    assert lora.key_inputs() != TrainConfig(method="lora", r=64).key_inputs()
    assert full.key_inputs() != TrainConfig(method="full", learning_rate=1e-5).key_inputs()
    assert "force" not in lora.key_inputs() and "name" not in full.key_inputs()
