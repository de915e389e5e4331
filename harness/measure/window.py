"""One measurement at a time on a machine.

Parallel launchers (joblib's `n_jobs`, a local Ray cluster) run jobs at once, each using every
core: their builds may overlap, their measurements must not, or each one's speed, latency and
capacity are the machine's shared between them. A measurement holds a machine-wide file lock
over its window, in a machine-local place (never the cache directory, which machines may
share): a job that finds it held waits, says for whom, and its figures start only once it has
the lock. The record keeps what the window was: exclusive, how long it waited, when it ran,
and how much CPU time other processes (not ours) took meanwhile, which no lock can prevent.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
# Other processes' share of the CPUs over a window above which the record's figures are
# suspect, and the log says so.
BUSY_SHARE = 0.25


def lock_path(configured: Optional[str] = None) -> Path:
    """The machine's measurement lock: `configured` (paths.measure_lock), else /var/lock where
    anyone may write, else the system's temporary directory; named for the host, so a
    temporary directory shared between nodes still gives each node its own."""
    if configured:
        return Path(configured)
    shared = Path("/var/lock")
    base = shared if shared.is_dir() and os.access(shared, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"slm-harness-measure.{socket.gethostname()}.lock"


def _busy_cpu_s() -> float:
    """Seconds every CPU of the machine has spent busy, all processes together."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _own_cpu_s() -> float:
    """CPU seconds of this process and of the children it has waited for (the measuring one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def others_cpu_share(busy_s: float, own_s: float, wall_s: float, cpus: int) -> float:
    """The share of the machine's CPU time over a window that processes other than ours took
    (the counters tick apart, 100 times a second: clamped to 0-1)."""
    return min(1.0, max(0.0, busy_s - own_s) / (wall_s * cpus)) if wall_s > 0 else 0.0


def _acquire(lock: FileLock, pid_file: Path) -> float:
    """Take the lock, waiting as long as it takes; the seconds waited."""
    try:
        lock.acquire(timeout=0)
        return 0.0
    except Timeout:
        holder = pid_file.read_text().strip() if pid_file.exists() else "unknown"
        log.info("waiting for the measurement lock held by pid %s (%s)", holder, lock.lock_file)
        started = time.monotonic()
        lock.acquire()
        waited = time.monotonic() - started
        log.info("measurement lock taken after %.0f s of waiting (not part of any figure)", waited)
        return waited


@contextmanager
def exclusive_window(path: Path) -> Iterator[dict[str, Any]]:
    """Hold the machine's measurement lock over the block, which measures; the dict yielded is
    filled, as the block ends, with what the record keeps of its window."""
    import psutil

    path.parent.mkdir(parents=True, exist_ok=True)
    # any user's job may take a lock another user's job created
    lock = FileLock(str(path), mode=0o666)
    pid_file = path.with_name(path.name + ".pid")
    waited = _acquire(lock, pid_file)
    try:
        try:
            pid_file.write_text(str(os.getpid()))
        except OSError:  # another user's file: the waiting message names no holder
            pass
        window: dict[str, Any] = {}
        started_unix, started = time.time(), time.monotonic()
        busy, own = _busy_cpu_s(), _own_cpu_s()
        yield window
        wall = time.monotonic() - started
        share = others_cpu_share(_busy_cpu_s() - busy, _own_cpu_s() - own, wall, psutil.cpu_count() or 1)
        window.update(
            exclusive=True,
            lock_wait_s=waited,
            started_unix_s=started_unix,
            ended_unix_s=started_unix + wall,
            others_cpu_share=share,
        )
        if share > BUSY_SHARE:
            log.warning(
                "other processes took %.0f%% of the CPUs while this job measured: its speed and latency "
                "figures are likely low (the record's runtime.measure_window says so)",
                100 * share,
            )
    finally:
        lock.release()
