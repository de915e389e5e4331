"""Provenance: what a record was measured with and on. Secrets never enter it: only named
package versions and hardware facts are read, never the environment's variables."""

from __future__ import annotations

import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import psutil

from harness.extras import installed_version
from harness.measure.machine import gpu_facts, local_cpu_facts

# What every job runs on (training, the tokenizer, the config); each format adds its own.
PACKAGES = ("torch", "transformers", "peft", "hydra-core")


def _cpu() -> dict:
    return {
        **local_cpu_facts(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment(repo: Path, format_packages: tuple[str, ...] = ()) -> dict:
    return {
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: installed_version(name) for name in dict.fromkeys(PACKAGES + format_packages)},
        "cpu": _cpu(),
        "gpu": gpu_facts(),
        "git_commit": git_commit(repo),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
