"""llama.cpp's converter as the package obtains it, with no make: `python -m harness.converter`
(what the README gives a `pip install -e .` user, and what `make setup` runs) on the real
llama-cpp-python sdist that `make setup` keeps, the fetch a GGUF job makes on first need, and the
refusal when it cannot (pip offline, for real)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.converter import MEMBERS, SCRIPT, llama_cpp_python_version
from harness.errors import ConfigError

from .conftest import REPO, run_harness, tiny_job_overrides

SDIST = Path(sys.prefix) / "src" / f"llama_cpp_python-{llama_cpp_python_version()}.tar.gz"
needs_sdist = pytest.mark.skipif(not SDIST.is_file(), reason=f"no {SDIST} (make setup keeps it there)")


@needs_sdist
def test_the_command_unpacks_a_converter_that_writes_a_gguf(tmp_path, tiny_llama):
    dest = tmp_path / "share" / "llama.cpp"
    done = subprocess.run(
        [sys.executable, "-m", "harness.converter", "--sdist", str(SDIST), "--dest", str(dest)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"llama.cpp's converter: {dest / SCRIPT}" in done.stdout
    assert sorted(p.name for p in dest.iterdir()) == sorted(MEMBERS)
    from harness.formats.gguf import check_gguf_file, convert_f16

    out = tmp_path / "tiny-F16.gguf"
    convert_f16(tiny_llama, out, str(dest))
    check_gguf_file(out)


@pytest.fixture
def pip_offline(monkeypatch, tmp_path) -> Path:
    """pip with no index: it finds packages only in the returned folder (empty to start)."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


@needs_sdist
def test_a_gguf_job_without_a_converter_fetches_it_on_first_need(tmp_path, monkeypatch, caplog):
    from harness import converter
    from harness.formats.gguf import check_converter

    def download(version: str, into: Path) -> Path:
        """pip's download needs the network (and the sdist's build backend, to read its
        metadata): the real sdist, copied where pip would put it, stands in for it."""
        assert version == llama_cpp_python_version()
        into.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(SDIST, into))

    monkeypatch.setattr(converter, "download_sdist", download)
    monkeypatch.setattr(converter, "default_dir", lambda: tmp_path / "share" / "llama.cpp")
    script = check_converter(None)
    assert script == tmp_path / "share" / "llama.cpp" / SCRIPT and script.is_file()
    assert "fetching it once with `python -m harness.converter`" in caplog.text


def test_a_converter_that_cannot_be_fetched_is_refused_naming_the_command(tmp_path, monkeypatch, pip_offline):
    from harness import converter
    from harness.formats.gguf import check_converter

    monkeypatch.setattr(converter, "default_dir", lambda: tmp_path / "share" / "llama.cpp")
    with pytest.raises(ConfigError, match=r"fetching it failed .*: run `python -m harness.converter` where pip can"):
        check_converter(None)


def test_a_gguf_job_refuses_a_configured_dir_without_the_converter_before_any_work(tiny_llama, tmp_path):
    empty = tmp_path / "llama.cpp"
    empty.mkdir()
    done = run_harness(
        [*tiny_job_overrides(tiny_llama, tmp_path), f"paths.llama_cpp_dir={empty}", f"hydra.run.dir={tmp_path / 'run'}"]
    )
    assert done.returncode == 1
    assert (
        f"paths.llama_cpp_dir={empty} holds no {SCRIPT}: point it at a llama.cpp checkout, or unpack llama.cpp's "
        f"converter there with `python -m harness.converter --dest {empty}`"
    ) in done.stdout + done.stderr
    assert not (tmp_path / "cache").exists()  # nothing was built
