"""Which torch build `make setup` installs on a CPU machine: the CPU build, from PyTorch's own
wheel index. PyPI's Linux torch is the CUDA build, gigabytes of CUDA libraries a CPU setup never
uses, and it makes the setup time a stranger measures depend on their download speed.

The CPU index is the only index for this one install (`--index-url`, not `--extra-index-url`: with
PyPI beside it, the resolver could take PyPI's CUDA build of the same version), torch alone
(`--no-deps`: its dependencies then come from pip's usual index, at constraints.txt's versions).
Where that index cannot be reached, pip installs whatever build its own index has, and this says so.

Runs before anything but the standard library is installed in the venv: stdlib only.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_INDEX = "https://download.pytorch.org/whl/cpu"
# Long enough for a slow link, short enough that a blocked one costs seconds, not pip's retries.
PROBE_TIMEOUT_S = 15.0


def pinned_version(constraints: Path) -> str:
    """torch's version in the constraints file (`torch==2.13.0`). The CPU index calls it
    `2.13.0+cpu`, which `==2.13.0` matches (a local version label is ignored by a pin without one)."""
    match = re.search(r"^torch==(\S+)\s*$", constraints.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"{constraints} pins no torch version (a line torch==X.Y.Z)")
    return match.group(1)


def index_reachable(index_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the index answers for torch's page (PEP 503: <index>/torch/)."""
    try:
        with urllib.request.urlopen(f"{index_url.rstrip('/')}/torch/", timeout=timeout_s):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def install_command(python: str, version: str, index_url: str, reachable: bool) -> tuple[list[str], str]:
    """(the pip command that installs torch alone, the line that says which build it gets)."""
    command = [python, "-m", "pip", "install", "--quiet", "--no-deps"]
    if reachable:
        return [*command, "--index-url", index_url, f"torch=={version}"], (
            f"torch {version}: the CPU build, from {index_url}"
        )
    return [*command, f"torch=={version}"], (
        f"torch {version}: {index_url} cannot be reached, so pip installs the build its own index has "
        "(on Linux, PyPI's is the CUDA build, gigabytes a CPU setup does not use); "
        "set TORCH_INDEX to a reachable mirror of PyTorch's CPU wheels to avoid it"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.torch_wheel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=DEFAULT_INDEX, help="PyTorch's CPU wheel index (make's TORCH_INDEX)")
    parser.add_argument("--constraints", type=Path, default=Path("constraints.txt"))
    parser.add_argument("--dry-run", action="store_true", help="print the pip command instead of running it")
    args = parser.parse_args(argv)
    command, line = install_command(
        sys.executable, pinned_version(args.constraints), args.index, index_reachable(args.index)
    )
    print(line, flush=True)
    if args.dry_run:
        print(" ".join(command))
        return
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
