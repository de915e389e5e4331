"""Hosted models through the OpenAI-compatible runtime, against real servers: llama.cpp's own
OpenAI-compatible server on a tiny GGUF, and small faulty HTTP servers for the failures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.errors import ConfigError
from harness.formats.gguf import GGUFQuant
from harness.runtimes.config import ApiConfig
from harness.runtimes.openai_compatible import EndpointError, OpenAICompatibleRuntime

from .conftest import build, run_harness


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tiny_llama, tmp_path_factory):
    """llama_cpp.server on 127.0.0.1 serving the tiny model as Q8_0; its /v1 base URL."""
    cache = tmp_path_factory.mktemp("server-cache")
    gguf = build(GGUFQuant(format="gguf", bits=8), tiny_llama, cache).path
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "1024",
            "--n_threads",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/models", timeout=2).read()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("llama_cpp.server did not come up")
            time.sleep(0.5)
    yield base
    server.terminate()
    server.wait(timeout=30)


def _dataset_overrides(tmp_path) -> list[str]:
    return [
        "logger=none",
        "language=[en,hr]",
        "dataset.train_per_cell=2",
        "dataset.validation_per_cell=1",
        "dataset.test_per_cell=1",
        "measure.max_new_tokens=8",
        f"paths.output_dir={tmp_path}",
    ]


def test_hosted_job_against_llama_cpp_server(llama_server, tmp_path):
    done = run_harness(
        [
            "model=local_server",
            f"model.api.base_url={llama_server}",
            "model.api.few_shot=2",
            "model.api.usd_per_mtok_in=3",
            "model.api.usd_per_mtok_out=5",
            *_dataset_overrides(tmp_path),
        ]
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads(next(tmp_path.glob("runs/*/*/record.json")).read_text())
    m = record["metrics"]
    assert record["status"] == "ok" and record["runtime"]["name"] == "openai_compatible"
    assert record["job"]["quant"] == "hosted" and record["job"]["train"] == "none"
    assert m["n_samples"] == 26 and m["tokens_in"] > 26 * 20 and m["tokens_out"] > 0
    assert m["cost_usd"] == pytest.approx((m["tokens_in"] * 3 + m["tokens_out"] * 5) / 1e6)
    assert m["latency_p50_ms"] > 0 and m["decode_tokens_per_s"] is None
    assert m["energy_j"] is None and "remote endpoint" in m["energy_unmeasured_reason"]
    predictions = (tmp_path / "cache" / "records").glob("*/predictions.jsonl")
    assert len(next(predictions).read_text().splitlines()) == 26


def test_hosted_model_with_a_quant_fails_at_composition(tmp_path):
    t0 = time.monotonic()
    done = run_harness(["model=local_server", "quant=gguf_q4km", *_dataset_overrides(tmp_path)])
    assert done.returncode == 1
    assert "model=local_server is a hosted model, measured as served: quant=gguf_q4km does not apply" in done.stdout
    assert time.monotonic() - t0 < 60  # no dataset, no training: refused at once


def test_missing_key_names_the_variable_and_never_its_value(tmp_path):
    env_free = run_harness(
        ["model=gpt41", "model.api.api_key_env=HARNESS_TEST_UNSET_KEY", *_dataset_overrides(tmp_path)]
    )
    assert env_free.returncode == 1
    assert "export HARNESS_TEST_UNSET_KEY=<your key>" in env_free.stdout


def test_unreachable_endpoint_fails_in_the_preflight(tmp_path):
    t0 = time.monotonic()
    done = run_harness(
        ["model=local_server", f"model.api.base_url=http://127.0.0.1:{_free_port()}/v1", *_dataset_overrides(tmp_path)]
    )
    assert (
        done.returncode == 1 and "cannot reach http://127.0.0.1:" in done.stdout and "make serve-local" in done.stdout
    )
    assert time.monotonic() - t0 < 60


def test_a_hosted_model_is_reachable_from_the_default_preset_by_its_source(tmp_path):
    """`model.source=api` and the endpoint's overrides on the default model, as `model.source=gguf
    model.path=F` works: the hosted kind's own preflight answers, in one line, in seconds."""
    t0 = time.monotonic()
    url = f"http://127.0.0.1:{_free_port()}/v1"
    done = run_harness(
        ["model.source=api", f"model.api.base_url={url}", "model.api.model_name=m", *_dataset_overrides(tmp_path)]
    )
    assert done.returncode == 1 and f"cannot reach {url}" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert time.monotonic() - t0 < 60
    missing = run_harness(["model.source=api", f"model.api.base_url={url}", *_dataset_overrides(tmp_path)])
    assert missing.returncode == 1 and "Traceback" not in missing.stdout + missing.stderr
    assert (
        "model.source=api needs model.api.model_name (e.g. model.api.base_url=http://127.0.0.1:8765/v1 "
        "model.api.model_name=local), or start from a hosted preset: model=local_server, model=gpt41"
    ) in missing.stdout


class _Faulty(BaseHTTPRequestHandler):
    """Lists models, then answers every completion with HTTP 500 or a body without choices."""

    calls = 0
    mode = "500"

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "local", "object": "model"}]})

    def do_POST(self):
        type(self).calls += 1
        if self.mode == "500" or (self.mode == "flaky" and self.calls % 3 == 0):
            self._send(500, {"error": {"message": "injected fault"}})
        elif self.mode == "401":
            self._send(401, {"error": {"message": "invalid key"}})
        elif self.mode == "flaky":
            answer = {"role": "assistant", "content": '{"intent": "other"}'}
            self._send(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "local",
                    "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26},
                },
            )
        else:
            self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "local", "choices": []})

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Faulty.calls = 0
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _runtime(base_url, **kw):
    return OpenAICompatibleRuntime(ApiConfig(base_url=base_url, model_name="local", **kw), max_new_tokens=8)


def test_http_500_is_retried_then_a_clear_error(faulty_server):
    _, url = faulty_server
    _Faulty.mode = "500"
    rt = _runtime(url, max_retries=2, timeout_s=5)
    rt.check_reachable()
    with pytest.raises(EndpointError, match=r"answered HTTP 500 \(after 2 retries\): .*injected fault"):
        rt.complete([{"role": "user", "content": "hi"}])
    assert _Faulty.calls == 3  # the first try and two retries, with backoff


def test_response_without_choices_is_a_clear_error(faulty_server):
    _, url = faulty_server
    _Faulty.mode = "empty"
    with pytest.raises(EndpointError, match="returned a response without a message"):
        _runtime(url, max_retries=0).complete([{"role": "user", "content": "hi"}])


def test_a_server_that_never_answers_times_out_instead_of_hanging():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections, never replies
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    t0 = time.monotonic()
    with pytest.raises(EndpointError, match=r"APITimeoutError after 0 retries \(timeout 1s per request\)"):
        _runtime(url, max_retries=0, timeout_s=1).complete([{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 < 10
    with pytest.raises(ConfigError, match="cannot reach"):
        _runtime(url, max_retries=0, timeout_s=1).check_reachable()
    listener.close()


def test_a_request_that_still_fails_costs_its_query_not_the_pass(faulty_server, tmp_path):
    """Every third request fails (no retries): those queries are scored invalid with their
    error kept, and the answers and tokens of the others are recorded."""
    from harness.data.config import DatasetConfig
    from harness.data.dataset import build_dataset, read_labels
    from harness.measure.config import MeasureConfig
    from harness.measure.hosted import measure_hosted

    _, url = faulty_server
    _Faulty.mode = "flaky"
    data = build_dataset(DatasetConfig(train_per_cell=1, validation_per_cell=1, test_per_cell=1), ["en"], tmp_path)
    api = ApiConfig(base_url=url, model_name="local", max_retries=0, concurrency=1)
    out = tmp_path / "out"
    out.mkdir()
    m = measure_hosted(api, MeasureConfig(), data, "Classify.", read_labels(data), out)["metrics"]
    n = m["n_samples"]
    failed = n // 3
    assert m["failed_requests"] == failed and m["invalid_rate"] == failed / n
    assert m["tokens_in"] == 20 * (n - failed)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert sum("injected fault" in r.get("error", "") for r in rows) == failed
    # every answer says `other`: right exactly where that is the gold label and the request answered
    assert m["accuracy"] == sum(r["intent"] == "other" and "error" not in r for r in rows) / n


def test_a_refused_key_stops_the_pass_at_once(faulty_server, tmp_path):
    from harness.data.config import DatasetConfig
    from harness.data.dataset import build_dataset, read_labels
    from harness.measure.config import MeasureConfig
    from harness.measure.hosted import measure_hosted

    _, url = faulty_server
    _Faulty.mode = "401"
    data = build_dataset(DatasetConfig(train_per_cell=1, validation_per_cell=1, test_per_cell=1), ["en"], tmp_path)
    api = ApiConfig(base_url=url, model_name="local", max_retries=0, concurrency=1)
    with pytest.raises(EndpointError, match="HTTP 401 .* the pass is stopped"):
        measure_hosted(api, MeasureConfig(), data, "Classify.", read_labels(data), tmp_path)
    # not once per query: the requests not yet started are cancelled (one may be under way)
    assert _Faulty.calls <= api.concurrency + 1
