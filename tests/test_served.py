"""The served load measurement against the real llama-server binary (`make llama-server`) on a
tiny GGUF, loopback only: start, health and stop; answers held to the label set equal to the
in-process ones; a server killed, a port taken, a binary missing; and no server left behind
when the job that started it is killed outright."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from harness.errors import ConfigError
from harness.formats.gguf import GGUFQuant
from harness.hardware import HardwareConfig
from harness.measure.config import MeasureConfig
from harness.measure.run import greedy_answer, label_trie
from harness.measure.served import answer_tokens, ask, completion_body, label_grammar, load_client, measure_served
from harness.measure.server import HOST, LlamaServer, ServerError, reap, server_binary
from harness.prompt import answer, render_prompt
from harness.runtimes.llama_cpp import N_CTX, LlamaCppRuntime

from .conftest import MIXED_LENGTH_QUERIES, REPO, build, run_harness, tiny_job_overrides

LABELS = ["cancel_order", "refund", "track_order", "greeting"]
# A served load small enough to take seconds on the tiny model; one thread, as the cores are
# shared (llama.cpp's threads wait on each other at every token when one is descheduled).
SMALL_LOAD = [
    "hardware.threads=1",
    "measure.serve=server",
    "measure.server_slots=2",
    "measure.load_rates=1",
    "measure.load_requests_per_rate=6",
    "measure.load_warmup_requests=1",
    "measure.load_max_seconds_per_rate=20",
]


@pytest.fixture(scope="module")
def binary() -> Path:
    try:
        return server_binary(None)
    except ConfigError:
        pytest.skip("llama-server is not built: `make llama-server` (make test builds it)")


@pytest.fixture(scope="module")
def gguf(tiny_llama, tmp_path_factory) -> Path:
    return build(GGUFQuant(format="gguf", bits=8), tiny_llama, tmp_path_factory.mktemp("served-cache")).path


def _server(binary: Path, gguf: Path, tmp_path: Path, **kw) -> LlamaServer:
    return LlamaServer(binary, gguf, 1, 2, N_CTX, tmp_path / "servers", tmp_path / "server.log", **kw)


def test_the_server_starts_healthy_on_loopback_and_stops(binary, gguf, tmp_path):
    with _server(binary, gguf, tmp_path) as server:
        pid = server.proc.pid
        assert server.url.startswith(f"http://{HOST}:")
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert os.getpgid(pid) == pid  # its own process group
        assert json.loads((tmp_path / "servers" / f"{pid}.json").read_text())["pid"] == pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not list((tmp_path / "servers").glob("*.json"))


def test_answers_held_to_the_labels_are_the_in_process_answers(binary, gguf, smollm2_tokenizer, tmp_path):
    cfg = MeasureConfig(decoding="labels", max_new_tokens=16)
    prompts = [render_prompt(smollm2_tokenizer, q, "Name the intent.") for q in MIXED_LENGTH_QUERIES]
    rt = LlamaCppRuntime(gguf, HardwareConfig(), threads=2)
    trie = label_trie(rt, LABELS, cfg.max_new_tokens)
    in_process = [greedy_answer(rt, rt.tokenize(p), cfg.max_new_tokens, trie).text for p in prompts]

    async def served(url):
        async with load_client(1, 60) as client:
            grammar = label_grammar(answer_tokens(url, LABELS))
            return [await ask(client, url, completion_body(p, cfg, grammar)) for p in prompts]

    with _server(binary, gguf, tmp_path) as server:
        # the server's tokens of each answer are the in-process runtime's
        assert answer_tokens(server.url, LABELS) == [rt.tokenize(answer(label)) for label in LABELS]
        replies = asyncio.run(served(server.url))
    assert all(error is None and ttft is not None for ttft, _, error in replies)
    assert [text for _, text, _ in replies] == in_process


def test_a_taken_port_is_named(binary, gguf, tmp_path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {HOST}:{port} is taken"):
            _server(binary, gguf, tmp_path, port=port).__enter__()


def test_a_server_that_dies_under_load_is_named_with_its_log(binary, gguf, tmp_path):
    with _server(binary, gguf, tmp_path) as server:
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        with pytest.raises(ServerError, match="exited under load .killed by SIGKILL.; its log ends:"):
            server.check_running("under load")


def test_the_served_section_on_the_tiny_model(binary, gguf, smollm2_tokenizer, tmp_path):
    cfg = MeasureConfig(
        max_new_tokens=16, decoding="labels", server_slots=2, load_rates=1, load_requests_per_rate=6,
        load_warmup_requests=1, load_max_seconds_per_rate=20, serve="server",
    )  # fmt: skip
    prompts = [render_prompt(smollm2_tokenizer, q, "Name the intent.") for q in MIXED_LENGTH_QUERIES]
    gold = ["track_order", "greeting", "refund", "refund", "cancel_order", "refund", "greeting"]
    served = measure_served(gguf, prompts, gold, LABELS, cfg, 1, None, tmp_path / "servers", tmp_path, 2.0)
    modes = [r["mode"] for r in served["rates"]]
    # Poisson rates follow where parallel requests raised the rate (on one thread they may not)
    assert modes[:2] == ["synchronous", "throughput"] and set(modes[2:]) <= {"poisson"}
    sync = served["rates"][0]
    assert sync["agreement"] == 1.0 and sync["requests"] == 6 and sync["answered"] == 6
    assert all(r["latency_p95_ms"] >= r["latency_p50_ms"] > 0 for r in served["rates"])
    assert served["server_peak_rss_mib"] > gguf.stat().st_size / 2**20
    assert served["slots"] == 2 and served["server"].startswith("version")
    low, high = served["capacity_interval_queries_per_s"]
    assert low <= high and (served["capacity_queries_per_s"] in (None, low))
    assert not list((tmp_path / "servers").glob("*.json"))


def test_a_left_pidfile_is_reaped_only_once_its_starter_is_gone(tmp_path):
    """A server whose starter died without taking it along (a system without PR_SET_PDEATHSIG)
    is killed by the next start; one whose starter lives (a job beside this one) is not."""
    pid_dir = tmp_path / "servers"
    pid_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = subprocess.Popen(["sleep", "60"], process_group=0)
    sibling = subprocess.Popen(["sleep", "60"], process_group=0)
    me = psutil.Process()
    for proc, owner, owner_started in ((orphan, dead.pid, 0.0), (sibling, me.pid, me.create_time())):
        entry = {
            "pid": proc.pid,
            "started": psutil.Process(proc.pid).create_time(),
            "owner_pid": owner,
            "owner_started": owner_started,
        }
        (pid_dir / f"{proc.pid}.json").write_text(json.dumps(entry))
    try:
        assert reap(pid_dir) == [orphan.pid]
        assert orphan.wait(5) == -signal.SIGKILL and sibling.poll() is None
        assert [p.name for p in pid_dir.glob("*.json")] == [f"{sibling.pid}.json"]
    finally:
        sibling.kill()
        orphan.kill()


def _servers_under(parent: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in parent.children(recursive=True):
        try:
            if child.name() == "llama-server":
                found.append(child)
        except psutil.Error:
            pass
    return found


def test_a_job_killed_outright_leaves_no_server(binary, tiny_llama, seeded):
    args = [*tiny_job_overrides(tiny_llama, seeded), "quant=gguf_q8_0", *SMALL_LOAD]
    args = [a for a in args if not a.startswith("measure.load_max_seconds")] + ["measure.load_max_seconds_per_rate=120"]
    job = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = psutil.Process(job.pid)
    deadline = time.monotonic() + 300
    while not (servers := _servers_under(parent)):
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before starting a server"
        time.sleep(0.2)
    job.send_signal(signal.SIGKILL)  # the job alone: the server has a group of its own
    job.wait()
    gone = psutil.wait_procs(servers, timeout=5)[1] == []
    assert gone, "llama-server outlived the job that started it"


def test_a_taken_port_fails_its_job_and_the_sweep_goes_on(binary, tiny_llama, seeded):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_harness(
            ["--multirun", *tiny_job_overrides(tiny_llama, seeded), "quant=gguf_q8_0", *SMALL_LOAD,
             f"measure.server_port={port},null"]
        )  # fmt: skip
    assert done.returncode == 1
    paths = sorted(seeded.glob("multirun/*/*/*/record.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    records = [json.loads(p.read_text()) for p in paths]
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert f"port {HOST}:{port} is taken" in records[0]["error"]
    served = records[1]["served"]
    assert served["rates"][0]["mode"] == "synchronous" and served["slots"] == 2
    report = next(seeded.glob("multirun/*/*/report/report.md"))
    assert "As served (llama.cpp's server, open-loop load)" in report.read_text()
    assert "As served" in report.with_suffix(".html").read_text()
    assert " served (" in report.read_text()  # the decision table's capacity is the served one


def test_a_missing_server_binary_fails_before_any_work_naming_the_make_target(tiny_llama, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run_harness(
        [*tiny_job_overrides(tiny_llama, tmp_path), "quant=gguf_q8_0", *SMALL_LOAD, f"paths.llama_cpp_bin={empty}"]
    )
    assert done.returncode == 1 and "make llama-server" in done.stdout
    assert not (tmp_path / "cache" / "dataset").exists()  # refused before any work


def test_serving_a_file_that_is_not_a_gguf_is_refused_at_composition(tiny_llama, tmp_path):
    done = run_harness([*tiny_job_overrides(tiny_llama, tmp_path), "quant=fp32", "measure.serve=server"])
    assert done.returncode == 1 and "measure.serve=server serves a GGUF" in done.stdout
    assert "quant=gguf_q4km" in done.stdout
