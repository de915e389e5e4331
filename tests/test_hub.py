"""Your own Hugging Face model when the hub says no: the real huggingface_hub client against a
small local server that answers as the hub does for a gated model, a private (or misspelt) one
and a refused token, each reported as what it is, naming the token to give; not as no network."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.errors import ConfigError
from harness.models import ModelConfig
from harness.sources.hf import hf_snapshot


class _Hub(BaseHTTPRequestHandler):
    """Every request answered with `status` and the hub's error code header."""

    status, code = 401, "GatedRepo"

    def do_GET(self):
        body = json.dumps({"error": "denied"}).encode()
        self.send_response(self.status)
        if self.code:
            self.send_header("X-Error-Code", self.code)
        self.send_header("X-Error-Message", "denied")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached to fall back on
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield _Hub
    server.shutdown()


@pytest.mark.parametrize(
    "status, code, message",
    [
        (401, "GatedRepo", "org/model is a gated model: accept its terms on https://huggingface.co/org/model"),
        (401, "RepoNotFound", "the Hugging Face hub has no org/model this token may read: check model.hf_id"),
        (403, None, "the Hugging Face hub refused the token for org/model@main (HTTP 403)"),
    ],
)
def test_a_refusal_by_the_hub_names_the_token_not_the_network(hub, monkeypatch, status, code, message):
    monkeypatch.setattr(hub, "status", status)
    monkeypatch.setattr(hub, "code", code)
    model = ModelConfig(name="mine", source="hf", hf_id="org/model")
    with pytest.raises(ConfigError) as refused:
        hf_snapshot(model)
    text = str(refused.value)
    assert text.startswith("model=mine: ") and message in text, text
    assert "set HF_TOKEN" in text and "`hf auth login`" in text
    assert "network" not in text and "\n" not in text
