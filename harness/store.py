"""Content-addressed cache of pipeline stages, and atomic file writes.

Every stage (dataset, base model, adapter, merged model, artifact, record) stores its output
in a directory named for a hash of exactly its inputs (`Stage`). A stage whose directory exists is
loaded, not rebuilt. Directories are built under a temporary name and renamed into place
while holding a file lock, so two jobs that need the same entry build it once, and a job
killed mid-build leaves nothing that looks complete; its partial build, a hidden directory
beside the entries, is removed by a later run once its lock is free (`remove_stale_builds`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
# Every stage this process looked up, in order: (stage, seconds it took to build, or None where
# it was in the cache). A sweep run in this process (Hydra's basic launcher) estimates its time
# left from them (`harness.sweep.time_left_s`).
LOOKUPS: list[tuple[str, Optional[float]]] = []


def cache_key(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (dataclasses included)."""

    def plain(obj: Any) -> Any:
        if is_dataclass(obj) and not isinstance(obj, type):
            return asdict(obj)
        raise TypeError(f"cannot hash {type(obj).__name__}")

    blob = json.dumps(parts, sort_keys=True, default=plain, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stage:
    """One cached stage: its name, and the inputs its output depends on (the keys of the
    stages before it among them), hashed in this order into its key; its entries live in the
    cache folder `folder` (the name, unless given). Every stage is keyed here, so what a key
    hashes is read in one place per stage, where the stage is declared."""

    name: str
    inputs: tuple[Any, ...]
    folder: Optional[str] = None

    @property
    def key(self) -> str:
        return cache_key(self.name, *self.inputs)

    def cached(self, cache_root: Path, build: Callable[[Path], None], force: bool = False) -> Path:
        """The stage's entry, built by `build` if it is not cached (`cached_dir`)."""
        return cached_dir(cache_root, self.folder or self.name, self.key, build, force)


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_dir(
    cache_root: Path,
    stage: str,
    key: str,
    build: Callable[[Path], None],
    force: bool = False,
) -> Path:
    """Return `<cache_root>/<stage>/<key>`, calling `build(tmp_dir)` to make it if needed.

    `build` writes into an empty temporary directory beside the final one; only when it
    returns is the directory renamed into place. With `force`, an existing entry is rebuilt.
    """
    final = cache_root / stage / key
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(final) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        # another job (a parallel launcher's, or another sweep's) is building this very stage
        log.info("waiting for another job building %s/%s (lock %s)", stage, key, lock.lock_file)
        started = time.monotonic()
        lock.acquire()
        log.info("%s/%s: the other job finished after %.0f s", stage, key, time.monotonic() - started)
    try:
        if final.exists() and not force:
            log.info("cache hit: %s/%s", stage, key)
            LOOKUPS.append((stage, None))
            return final
        log.info("building %s/%s", stage, key)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            build(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        built_s = time.monotonic() - started
        LOOKUPS.append((stage, built_s))
        log.info("built %s/%s in %.0f s", stage, key, built_s)
    finally:
        lock.release()
    return final


def _partial_builds(cache_root: Path) -> list[tuple[Path, Path]]:
    """(partial build, its entry's lock) for each hidden `.<key>.<random>` directory that
    `cached_dir` builds in, in every stage of the cache."""
    out = []
    for tmp in sorted(cache_root.glob("*/.*.*")):
        key = tmp.name[1:].rsplit(".", 1)[0]
        if tmp.is_dir() and key:
            out.append((tmp, tmp.parent / f"{key}.lock"))
    return out


def remove_stale_builds(cache_root: Path) -> tuple[int, float]:
    """Remove the partial builds whose builder is gone, a job killed mid-build (SIGKILL, a lost
    node) leaves them; (how many, MiB freed). A builder holds its entry's lock while it builds,
    so a partial build whose lock is free has none; one whose lock is held is being built and
    is left alone. The lock is held while removing, so no builder starts meanwhile."""
    removed, freed_mib = 0, 0.0
    for tmp, lock_path in _partial_builds(cache_root):
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # its builder is alive
        try:
            if tmp.exists():
                freed_mib += dir_size_mib(tmp)
                shutil.rmtree(tmp, ignore_errors=True)
                removed += 1
        finally:
            lock.release()
    if removed:
        log.info(
            "removed %d stale partial build%s, %.0f MiB (left by jobs killed mid-build)",
            removed,
            "" if removed == 1 else "s",
            freed_mib,
        )
    return removed, freed_mib


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def dir_size_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
