"""A sweep says where it is: job k of N, elapsed, and time left from what each job still has
to build."""

from __future__ import annotations

from harness.sweep import _left, sweep_jobs, sweep_size, time_left_s


def test_sweep_size_is_the_product_of_every_swept_keys_choices():
    assert sweep_size(["quant=fp32,gguf_q8_0", "train.max_steps=2"], {"measure.decoding": "free,labels"}) == 4
    assert sweep_size([], {"quant": "fp32,gguf_q8_0,gguf_q4km"}) == 3
    # the command line overrides the sweep file's choices for the same key, as Hydra does
    assert sweep_size(["quant=fp32"], {"quant": "fp32,gguf_q8_0,gguf_q4km"}) == 1
    assert sweep_size(["quant.bits=range(2,5)"], None) == 3
    assert sweep_size(["quant=fp32"], None) == 1


def test_the_sweeps_jobs_in_the_basic_sweepers_order():
    assert sweep_jobs(["quant=fp32,gguf_q8_0", "train.max_steps=2"], {"train.epochs": "1,2"}) == [
        ["train.epochs=1", "quant=fp32", "train.max_steps=2"],
        ["train.epochs=1", "quant=gguf_q8_0", "train.max_steps=2"],
        ["train.epochs=2", "quant=fp32", "train.max_steps=2"],
        ["train.epochs=2", "quant=gguf_q8_0", "train.max_steps=2"],
    ]


def test_time_left_from_what_each_job_still_has_to_build():
    """Job 1 built everything (a 20-minute fine-tune among it). Jobs 2 and 3 share its adapter
    and only quantize and measure: 10 + 100 s each. Job 4 trains another adapter (1200 s, as
    the last fine-tune did), quantizes and measures: 1310 s. 1530 s in all, where
    extrapolating job 1's 1318 s would say 3954."""
    jobs = [
        ["quant=fp32", "train.max_steps=2"],
        ["quant=gguf_q8_0", "train.max_steps=2"],
        ["quant=gguf_q4km", "train.max_steps=2"],
        ["quant=fp32", "train.max_steps=4"],
    ]
    job1 = [("dataset", 5.0), ("adapter", 1200.0), ("artifact", 10.0), ("bandwidth", 3.0), ("records", 100.0)]
    assert time_left_s(jobs, [job1]) == (1530.0, True)
    # job 2 found all but its artifact and record in the cache; its quantize took 12 s, its
    # measurement 90: job 3 costs 12 + 90, job 4 1200 + 12 + 90
    job2 = [("dataset", None), ("adapter", None), ("artifact", 12.0), ("bandwidth", None), ("records", 90.0)]
    assert time_left_s(jobs, [job1, job2]) == (1404.0, True)
    assert time_left_s(jobs, [job1, job2, job2, job2]) == (0.0, True)
    # a sweep whose first job found its adapter and artifact in the cache: job 4's new adapter,
    # and every new artifact, cost an unknown time, so 3 measurements of 100 s is a lower bound
    cached = [("dataset", None), ("adapter", None), ("artifact", None), ("records", 100.0)]
    assert time_left_s(jobs, [cached]) == (300.0, False)
    assert _left(300.0, False) == ", at least 5 min left" and _left(1530.0, True) == ", about 26 min left"
    assert _left(0.0, False) == ""  # nothing known yet: no figure rather than a wrong one
    # as job 1 starts no job has finished: "about 0 s left" would be a wrong figure
    assert time_left_s(jobs, []) == (0.0, False)
