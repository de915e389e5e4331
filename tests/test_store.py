"""The stage cache: built once, atomic, safe under concurrent builders."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from harness.store import cache_key, cached_dir, write_json_atomic


def test_cache_key_is_stable_and_order_insensitive_for_dicts():
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
    assert cache_key("x", 1) != cache_key("x", 2)


def test_a_stage_is_keyed_by_its_name_and_inputs_and_cached_in_its_folder(tmp_path):
    from harness import stages
    from harness.store import Stage

    stage = Stage("record", ("artifact", {"threads": 2}), "records")
    assert stage.key == cache_key("record", "artifact", {"threads": 2})
    assert stage.cached(tmp_path, lambda out: (out / "f").write_text("x")) == tmp_path / "records" / stage.key
    # a key cached entries are filed under (the default job's merged model, from its adapter's
    # key): a stage's inputs, their order or its name changed here orphans every entry
    assert stages.merged("0274894dde365acd").key == "154da4be3c4ae195"


def test_built_once_then_hit(tmp_path):
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "f").write_text("x")

    first = cached_dir(tmp_path, "stage", "k", build)
    second = cached_dir(tmp_path, "stage", "k", build)
    assert first == second and len(calls) == 1 and (first / "f").read_text() == "x"
    cached_dir(tmp_path, "stage", "k", build, force=True)
    assert len(calls) == 2


def test_failed_build_leaves_nothing(tmp_path):
    def build(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        cached_dir(tmp_path, "stage", "k", build)
    assert not (tmp_path / "stage" / "k").exists()
    assert [p.name for p in (tmp_path / "stage").iterdir()] == ["k.lock"]


def _build_when_released(root: str, log: str, release: str) -> None:
    """Build the entry, holding it open until the file `release` exists; this process's
    harness.store log goes to `<log>.<pid>`."""
    import logging
    import os

    logging.basicConfig(filename=f"{log}.{os.getpid()}", level=logging.INFO)

    def build(out: Path) -> None:
        with open(log, "a") as f:
            f.write("built\n")
        while not Path(release).exists():
            time.sleep(0.05)
        (out / "f").write_text("x")

    cached_dir(Path(root), "stage", "k", build)


def test_concurrent_jobs_build_once(tmp_path):
    """The second job starts while the first is building, and the first finishes only once the
    second waits for it (or, with no lock, builds too): the two always overlap."""
    log, release = tmp_path / "log", tmp_path / "release"
    ctx = mp.get_context("spawn")
    args = (str(tmp_path), str(log), str(release))
    first, second = (ctx.Process(target=_build_when_released, args=args) for _ in range(2))
    first.start()
    try:
        _wait_until(lambda: log.exists())
        second.start()
        waits = tmp_path / f"log.{second.pid}"
        _wait_until(lambda: "waiting for another job" in _text(waits) or log.read_text().count("built") > 1)
    finally:
        release.touch()
        for p in (first, second):
            p.join(60)
    assert (first.exitcode, second.exitcode) == (0, 0)
    assert log.read_text() == "built\n" and "cache hit: stage/k" in _text(waits)


def _wait_until(condition, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_write_json_atomic_replaces(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert path.read_text().strip().endswith("}") and '"a": 2' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_job_waiting_for_another_ones_build_says_so(tmp_path, caplog):
    import logging
    import threading

    from filelock import FileLock

    held = FileLock(str(tmp_path / "adapter" / "k1") + ".lock")
    (tmp_path / "adapter").mkdir()
    held.acquire()
    built = []
    with caplog.at_level(logging.INFO, logger="harness.store"):
        waiter = threading.Thread(target=lambda: built.append(cached_dir(tmp_path, "adapter", "k1", lambda d: None)))
        waiter.start()
        for _ in range(100):  # until the waiter has said it waits
            if "waiting for another job building adapter/k1" in caplog.text:
                break
            time.sleep(0.05)
        held.release()
        waiter.join(10)
    assert "waiting for another job building adapter/k1" in caplog.text
    assert "the other job finished after" in caplog.text and built == [tmp_path / "adapter" / "k1"]


def _build_forever(root: str) -> None:
    """A builder that writes 3 MiB and never finishes, as a fine-tune killed midway."""

    def build(out: Path) -> None:
        (out / "weights.bin").write_bytes(b"\0" * 3 * 2**20)
        (out / "written").touch()
        time.sleep(600)

    cached_dir(Path(root), "adapter", "0123456789abcdef", build)


def test_a_killed_builders_partial_build_is_removed_and_a_live_ones_is_not(tmp_path, caplog):
    import logging
    import os
    import signal

    from harness.store import remove_stale_builds

    builder = mp.get_context("spawn").Process(target=_build_forever, args=(str(tmp_path),))
    builder.start()
    try:
        for _ in range(600):
            partial = list((tmp_path / "adapter").glob(".0123456789abcdef.*"))
            if partial and (partial[0] / "written").exists():
                break
            time.sleep(0.05)
        assert partial, "the builder never started its build"
        assert remove_stale_builds(tmp_path) == (0, 0.0)  # its builder is alive: left alone
        assert partial[0].is_dir()
    finally:
        os.kill(builder.pid, signal.SIGKILL)
        builder.join(10)
    assert partial[0].is_dir()  # what a SIGKILL leaves
    # a job run again builds the entry anew: the killed build is never taken for it
    entry = cached_dir(tmp_path, "adapter", "0123456789abcdef", lambda out: (out / "weights.bin").write_text("new"))
    assert sorted(p.name for p in entry.iterdir()) == ["weights.bin"] and (entry / "weights.bin").read_text() == "new"
    with caplog.at_level(logging.INFO, logger="harness.store"):
        removed, freed_mib = remove_stale_builds(tmp_path)
    assert removed == 1 and freed_mib == pytest.approx(3.0)
    assert "removed 1 stale partial build, 3 MiB" in caplog.text
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["0123456789abcdef", "0123456789abcdef.lock"]
