"""A sweep says where it is: job k of N, elapsed, time left."""

from __future__ import annotations

from harness.sweep import eta_s, sweep_size


def test_sweep_size_is_the_product_of_every_swept_keys_choices():
    assert sweep_size(["quant=fp32,gguf_q8_0", "train.max_steps=2"], {"measure.decoding": "free,labels"}) == 4
    assert sweep_size([], {"quant": "fp32,gguf_q8_0,gguf_q4km"}) == 3
    # the command line overrides the sweep file's choices for the same key, as Hydra does
    assert sweep_size(["quant=fp32"], {"quant": "fp32,gguf_q8_0,gguf_q4km"}) == 1
    assert sweep_size(["quant.bits=range(2,5)"], None) == 3
    assert sweep_size(["quant=fp32"], None) == 1


def test_time_left_from_the_jobs_done():
    assert eta_s(0, 4, 10.0) is None
    assert eta_s(2, 4, 600.0) == 600.0
