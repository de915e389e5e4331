"""Failure and resume with real processes: a timeout, a crashed measurement process, and
a sweep killed with SIGKILL then run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, run_harness, tiny_job_overrides


def _records(root: Path) -> list[dict]:
    paths = sorted(root.glob("multirun/*/*/*/record.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    return [json.loads(p.read_text()) for p in paths]


def _start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


# A sitecustomize that makes the first process of one isolated stage segfault as it starts:
# a crash no stage can finish before, as a signal sent from outside could miss a quick stage.
CRASH_ONCE = """
import os, signal, sys

if sys.orig_argv[1:4] == ["-m", "harness.isolated", os.environ["CRASH_STAGE"]]:
    try:
        os.close(os.open(os.environ["CRASH_MARK"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        pass
    else:
        os.kill(os.getpid(), signal.SIGSEGV)
"""


def _crashing_once(stage: str, root: Path) -> dict:
    """The environment in which the sweep's first `stage` process dies of SIGSEGV."""
    site = root / "crash_once"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASH_ONCE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "CRASH_STAGE": stage, "CRASH_MARK": str(site / "crashed")}


def _wait_for(predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def test_timeout_becomes_a_failed_record(tiny_llama, seeded):
    args = tiny_job_overrides(tiny_llama, seeded) + ["measure.timeout_s=0.5", f"hydra.run.dir={seeded / 'run'}"]
    done = run_harness(args)
    assert done.returncode == 1
    record = json.loads((seeded / "run" / "record.json").read_text())
    assert record["status"] == "failed" and record["error_type"] == "StageFailed"
    assert "timed out after 0.5 s (measure.timeout_s)" in record["error"]
    cached = [p for p in (seeded / "cache" / "records").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert not cached  # a failed measurement leaves no record in the cache


def test_crashed_measurement_fails_its_job_and_the_sweep_goes_on(tiny_llama, seeded):
    args = ["--multirun", *tiny_job_overrides(tiny_llama, seeded), "quant=gguf_q8_0,gguf_q4km"]
    sweep = _start(args, _crashing_once("measure", seeded))
    assert sweep.wait(300) == 1
    records = _records(seeded)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "killed by SIGSEGV" in records[0]["error"]


@pytest.mark.slow  # a sweep run twice: make test-full
def test_sweep_killed_midway_completes_when_run_again(tiny_llama, seeded):
    args = ["--multirun", *tiny_job_overrides(tiny_llama, seeded), "quant=gguf_q8_0,gguf_q4km,gguf_q5km"]
    sweep = _start(args)
    _wait_for(lambda: len(_records(seeded)) >= 1 or sweep.poll() is not None)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    first = _records(seeded)
    assert 1 <= len(first) < 3

    done = run_harness(args)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted((seeded / "multirun").glob("*/*"))
    rerun = [json.loads(p.read_text()) for p in sorted(runs[-1].glob("*/record.json"))]
    assert [r["status"] for r in rerun] == ["ok", "ok", "ok"]
    # the job that had finished is reused, not re-measured
    assert rerun[0]["keys"]["record"] == first[0]["keys"]["record"]
    assert rerun[0]["metrics"] == first[0]["metrics"]
    # every cache entry is complete: no stage directory without its final file
    for record_dir in (seeded / "cache" / "records").iterdir():
        if record_dir.is_dir() and not record_dir.name.startswith("."):
            assert (record_dir / "record.json").is_file()
    # and no partial build the killed sweep left behind outlives the re-run
    assert not [p for p in (seeded / "cache").glob("*/.*.*") if p.is_dir()]


def test_a_quantizer_that_crashes_natively_fails_its_job_and_the_sweep_goes_on(tiny_llama, seeded):
    """Build stages run in their own process, as measurement does: a segfault inside
    llama.cpp's quantizer becomes a failed record, not a dead sweep."""
    args = ["--multirun", *tiny_job_overrides(tiny_llama, seeded), "quant=gguf_q8_0,gguf_q4km"]
    sweep = _start(args, _crashing_once("quantize-gguf_q8_0", seeded))
    assert sweep.wait(600) == 1
    records = _records(seeded)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert records[0]["error_type"] == "StageFailed"
    assert "quantize-gguf_q8_0 process killed by SIGSEGV" in records[0]["error"]
    # nothing half-built is left to be mistaken for an artifact
    for artifact_dir in (seeded / "cache" / "artifact").iterdir():
        if artifact_dir.is_dir() and not artifact_dir.name.startswith("."):
            assert list(artifact_dir.glob("*.gguf"))
