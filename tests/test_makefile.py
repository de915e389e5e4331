"""The Makefile as a newcomer meets it, run for real in a scratch copy of the repository: its
help, the setup stamp, the torch build a CPU setup installs, and `make clean`. A target that would
install runs as `make -n` (its commands printed, not run): nothing is installed here."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.torch_wheel import pinned_version

from .conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


@pytest.fixture
def scratch(tmp_path) -> Path:
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def make(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # stdin is not a terminal, as in CI
    return subprocess.run(
        ["make", *args], cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def stamp(scratch: Path, content: str) -> None:
    """A venv set up for `content` (a stamp newer than what it depends on)."""
    done = scratch / ".venv" / ".setup-done"
    done.parent.mkdir(exist_ok=True)
    done.write_text(content + "\n")
    earlier = time.time() - 60
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        os.utime(scratch / name, (earlier, earlier))


def phony_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {t for line in re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE) for t in line.split() if "$" not in t}


def test_a_bare_make_prints_the_help_and_it_lists_every_target(scratch):
    bare, help_ = make(scratch), make(scratch, "help")
    assert bare.returncode == 0 and bare.stdout == help_.stdout
    listed = {line.split()[0] for line in help_.stdout.splitlines() if line.startswith("  ")}
    assert phony_targets() <= listed, f"targets without a `## ` line: {phony_targets() - listed}"
    assert "sweep-<name>" in listed
    # and it starts nothing: no compile, no venv
    assert not (scratch / ".venv").exists()


def test_a_setup_for_the_same_machine_is_not_redone(scratch):
    stamp(scratch, "GPU=0")
    done = make(scratch, "-n", "setup", "GPU=0")
    assert done.returncode == 0 and "pip" not in done.stdout, done.stdout


@pytest.mark.parametrize(
    "was, args",
    [
        ("GPU=0", ["GPU=1", "CUDA_ARCH=90"]),  # a GPU setup after a CPU one
        ("GPU=1 CUDA_ARCH=90", ["GPU=1", "CUDA_ARCH=80"]),  # another GPU
        ("GPU=1 CUDA_ARCH=90", ["GPU=0"]),  # back to the CPU
        ("", ["GPU=0"]),  # a stamp that says nothing (an older Makefile's)
    ],
)
def test_a_setup_for_another_gpu_or_architecture_is_redone(scratch, was, args):
    stamp(scratch, was)
    done = make(scratch, "-n", "setup", "NVCC=true", *args)
    assert done.returncode == 0, done.stderr
    assert "llama-cpp-python==" in done.stdout and "it was set up for" in done.stdout
    assert ("GGML_CUDA=on" in done.stdout) == ("GPU=1" in args)
    for arg in args:
        assert f"{arg}" in re.search(r"echo '(GPU=.*)' > \.venv/\.setup-done", done.stdout).group(1)


def torch_line(scratch: Path, *args: str) -> str:
    """The command a CPU setup installs torch with, as `make -n setup` prints it."""
    done = make(scratch, "-n", "setup", "GPU=0", *args)
    (line,) = [line for line in done.stdout.splitlines() if "harness.torch_wheel" in line]
    return line


def run_torch_line(scratch: Path, line: str) -> str:
    """That command with this interpreter and --dry-run, where make runs it (the venv's copy of
    constraints.txt beside it): which build it installs, and from where."""
    (scratch / ".venv").mkdir(exist_ok=True)
    shutil.copy(scratch / "constraints.txt", scratch / ".venv" / "constraints.txt")
    args = line.split()[1:]  # .venv/bin/python -> this one
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, *args, "--dry-run"], cwd=scratch, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_cpu_setup_installs_torch_from_the_cpu_index_by_default(scratch):
    line = torch_line(scratch)
    assert "--index https://download.pytorch.org/whl/cpu" in line
    assert "--index http://mirror.example/cpu" in torch_line(scratch, "TORCH_INDEX=http://mirror.example/cpu")


def test_a_reachable_cpu_index_is_the_only_index_torch_comes_from(scratch, tmp_path):
    index = tmp_path / "index"
    (index / "torch").mkdir(parents=True)
    (index / "torch" / "index.html").write_text("<html></html>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(index))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        out = run_torch_line(scratch, torch_line(scratch, f"TORCH_INDEX={url}"))
    finally:
        server.shutdown()
    version = pinned_version(REPO / "constraints.txt")
    assert f"the CPU build, from {url}" in out
    # --index-url: PyPI (and its CUDA build of the same version) is not consulted for torch
    assert f"--no-deps --index-url {url} torch=={version}" in out and "--extra-index-url" not in out


def test_an_unreachable_cpu_index_falls_back_to_pips_own_and_says_so(scratch):
    with socket.socket() as s:  # a port nothing listens on: refused at once
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/cpu"
    out = run_torch_line(scratch, torch_line(scratch, f"TORCH_INDEX={url}"))
    assert f"{url} cannot be reached, so pip installs the build its own index has" in out
    assert "--index-url" not in out and "torch==" in out


def wandb_run(scratch: Path, name: str, synced: bool) -> Path:
    run = scratch / "outputs" / "wandb" / f"offline-run-{name}"
    run.mkdir(parents=True)
    (run / f"run-{name}.wandb").write_bytes(b"")
    if synced:  # what `wandb sync` leaves beside a run it uploaded
        (run / f"run-{name}.wandb.synced").write_text("")
    return run


def test_make_clean_asks_before_deleting_unsynced_wandb_runs(scratch):
    wandb_run(scratch, "a", synced=True)
    wandb_run(scratch, "b", synced=False)
    refused = make(scratch, "clean")
    assert refused.returncode != 0
    assert "1 W&B run(s) under outputs/wandb were never uploaded" in refused.stderr
    assert "offline-run-b" in refused.stderr and "make clean FORCE=1" in refused.stderr
    assert (scratch / "outputs").is_dir()
    assert make(scratch, "clean", "FORCE=1").returncode == 0
    assert not (scratch / "outputs").exists()


def test_make_clean_deletes_synced_runs_without_asking(scratch):
    wandb_run(scratch, "a", synced=True)
    (scratch / "multirun").mkdir()
    done = make(scratch, "clean")
    assert done.returncode == 0, done.stderr
    assert not (scratch / "outputs").exists() and not (scratch / "multirun").exists()
