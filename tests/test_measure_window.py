"""Figures no launch can pollute: one measurement at a time per machine, whatever runs jobs at
once, and `hardware.threads=0` meaning the CPUs this job may run on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from filelock import FileLock

from harness.measure.window import exclusive_window, lock_path, others_cpu_share

from .conftest import REPO, tiny_job_overrides


def test_threads_zero_means_the_cpus_this_process_may_run_on():
    """A process pinned to one CPU (as Slurm, taskset or a cpuset pins a job) gets one thread,
    however many cores the node has."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from harness.hardware import HardwareConfig; "
        "print(HardwareConfig().threads_used, HardwareConfig(threads=3).threads_used)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "3"]


def test_the_lock_is_machine_local_and_named_for_the_host(tmp_path):
    path = lock_path()
    assert path.parent in (Path("/var/lock"), Path(tempfile.gettempdir()))
    assert os.uname().nodename in path.name
    assert lock_path(str(tmp_path / "lock")) == tmp_path / "lock"


def test_other_processes_cpu_share_over_a_window():
    # 2 CPUs for 10 s: 20 CPU-seconds; the machine was busy 15, ours 5: others took half
    assert others_cpu_share(15.0, 5.0, 10.0, 2) == 0.5
    assert others_cpu_share(4.0, 5.0, 10.0, 2) == 0.0  # counters read apart: never negative
    assert others_cpu_share(20.5, 0.0, 10.0, 2) == 1.0  # nor over the whole machine


def test_a_window_waits_for_the_holder_and_keeps_its_facts(tmp_path, caplog):
    import logging
    import threading

    lock = tmp_path / "measure.lock"
    held = FileLock(str(lock))
    held.acquire()
    (tmp_path / "measure.lock.pid").write_text("4242")
    facts = []

    def measure():
        with exclusive_window(lock) as window:
            time.sleep(0.2)
        facts.append(window)

    with caplog.at_level(logging.INFO, logger="harness.measure.window"):
        waiter = threading.Thread(target=measure)
        waiter.start()
        deadline = time.monotonic() + 60  # however loaded the machine
        while "waiting for the measurement lock held by pid 4242" not in caplog.text:
            assert time.monotonic() < deadline, "the window never waited"
            time.sleep(0.05)
        time.sleep(0.3)
        held.release()
        waiter.join(10)
    assert "waiting for the measurement lock held by pid 4242" in caplog.text
    (window,) = facts
    assert window["exclusive"] and window["lock_wait_s"] >= 0.3
    assert 0.2 <= window["ended_unix_s"] - window["started_unix_s"] < 5
    assert 0 <= window["others_cpu_share"] <= 1


def _job(tiny_llama: Path, outputs: Path, quant: str, lock: Path, log: Path) -> subprocess.Popen:
    args = [
        *tiny_job_overrides(tiny_llama, outputs),
        f"quant={quant}",
        f"paths.measure_lock={lock}",
        f"hydra.run.dir={outputs / quant}",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow  # two real jobs building and measuring side by side on two cores: make test-full
def test_two_jobs_at_once_measure_one_after_the_other(tiny_llama, seeded, tuned_cache):
    """Two real jobs ready to measure at the same moment: this test holds the machine's lock
    until both wait for it, then lets them race. Their measurement windows never overlap, and
    each record says its window was exclusive and how long it waited."""
    import shutil

    # the machine's bandwidth, measured once under the same lock, is already known
    shutil.copytree(tuned_cache / "bandwidth", seeded / "cache" / "bandwidth")
    lock = seeded / "measure.lock"
    held = FileLock(str(lock))
    held.acquire()
    logs = {q: seeded / f"{q}.log" for q in ("gguf_q8_0", "gguf_q4km")}
    jobs = [_job(tiny_llama, seeded, q, lock, log) for q, log in logs.items()]
    try:
        deadline = time.monotonic() + 400
        while not all("waiting for the measurement lock" in log.read_text() for log in logs.values()):
            assert all(j.poll() is None for j in jobs), [log.read_text()[-3000:] for log in logs.values()]
            assert time.monotonic() < deadline, "the jobs never reached their measurements"
            time.sleep(0.5)
    finally:
        held.release()
    for job, log in zip(jobs, logs.values()):
        assert job.wait(400) == 0, log.read_text()[-3000:]
    windows = []
    for quant in logs:
        record = json.loads((seeded / quant / "record.json").read_text())
        window = record["runtime"]["measure_window"]
        assert window["exclusive"] and window["lock_wait_s"] > 0
        # the wait is no part of the measurement's own time
        assert record["measure_wall_s"] <= window["ended_unix_s"] - window["started_unix_s"] + 0.1
        windows.append((window["started_unix_s"], window["ended_unix_s"]))
    (a_start, a_end), (b_start, b_end) = sorted(windows)
    assert a_end <= b_start, f"measurement windows overlap: {windows}"
