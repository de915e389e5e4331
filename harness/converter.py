"""llama.cpp's converter, which writes a fine-tuned checkpoint as a GGUF: `convert_hf_to_gguf.py`,
its `conversion/` package and its own `gguf-py` (newer than, and not compatible with, the PyPI
`gguf` that transformers uses), all from the llama.cpp source that the installed
llama-cpp-python vendors, so the files it writes are the ones its runtime reads.

No wheel ships them, so the package obtains them itself: `python -m harness.converter` downloads
the llama-cpp-python sdist of the installed version from PyPI and unpacks the three into
`<sys.prefix>/share/llama.cpp`. `make setup` runs it; a GGUF job that finds no converter runs it
on first need, and where that fails, refuses before any work, naming this command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

SCRIPT = "convert_hf_to_gguf.py"
# What the converter needs, under the sdist's vendor/llama.cpp/.
MEMBERS = (SCRIPT, "conversion", "gguf-py")
COMMAND = "python -m harness.converter"


def default_dir() -> Path:
    """Where the converter is looked for when `paths.llama_cpp_dir` is not set."""
    return Path(sys.prefix) / "share" / "llama.cpp"


def llama_cpp_python_version() -> str:
    return importlib.metadata.version("llama_cpp_python")


def download_sdist(version: str, into: Path) -> Path:
    """The llama-cpp-python sdist of `version`, downloaded by pip (its index, proxy and cache
    settings) into `into`; a file already there is reused."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        + ["-d", str(into), f"llama-cpp-python=={version}"],
        check=True,
    )
    return into / f"llama_cpp_python-{version}.tar.gz"


def unpack(sdist: Path, dest: Path) -> Path:
    """The converter's files from `sdist` into `dest` (replacing what was there); the script's path.
    Unpacked beside `dest` first, so a converter is never seen half written."""
    top = sdist.name.removesuffix(".tar.gz")
    prefix = f"{top}/vendor/llama.cpp/"
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with tarfile.open(sdist) as tar:
            members = []
            for member in tar.getmembers():
                relative = member.name.removeprefix(prefix)
                if member.name.startswith(prefix) and relative.split("/")[0] in MEMBERS:
                    member.name = relative
                    members.append(member)
            if not any(m.name == SCRIPT for m in members):
                raise ValueError(f"{sdist} holds no {prefix}{SCRIPT}: not a llama-cpp-python sdist")
            tar.extractall(staging, members=members, filter="data")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest / SCRIPT


def fetch(dest: Optional[Path] = None, sdist: Optional[Path] = None, sdist_dir: Optional[Path] = None) -> Path:
    """Download (unless `sdist` is given) and unpack the converter; the script's path. The sdist
    is kept in `sdist_dir` when given (`make llama-tools` builds llama.cpp's tools from it)."""
    dest = dest or default_dir()
    if sdist is None:
        version = llama_cpp_python_version()
        if sdist_dir is not None:
            sdist = download_sdist(version, sdist_dir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                return unpack(download_sdist(version, Path(tmp)), dest)
    return unpack(sdist, dest)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[1])
    parser.add_argument("--dest", type=Path, default=None, help=f"where to unpack it (default: {default_dir()})")
    parser.add_argument("--sdist", type=Path, default=None, help="a llama-cpp-python sdist on disk, not downloaded")
    parser.add_argument("--sdist-dir", type=Path, default=None, help="keep the downloaded sdist here")
    args = parser.parse_args(argv)
    script = fetch(args.dest, args.sdist, args.sdist_dir)
    print(f"llama.cpp's converter: {script}")


if __name__ == "__main__":
    main()
