"""Live progress: what a job's progress bars show and its training figures, handed as they
happen to a listener in the job's process (its W&B run, `report.wandb_log.LiveRun`).

A heavy stage runs in a child process (`harness.isolated`): there `emit` appends each event as
a JSON line to the file named by HARNESS_PROGRESS_FILE, and the job's process, waiting on the
child, forwards the new lines every `POLL_S` (`Tail`). In the job's own process `emit` calls
the listener directly. With no listener (tests, library use) events go nowhere.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

ENV = "HARNESS_PROGRESS_FILE"
# How often a bar reports its count, and how often the job's process reads a child's events.
EMIT_EVERY_S = 2.0
POLL_S = 1.0

Listener = Callable[[dict], None]
T = TypeVar("T")

log = logging.getLogger(__name__)
_listener: Optional[Listener] = None


@dataclass(frozen=True)
class BarCount:
    """A bar's count, as `Progress` sends it: the event {"bar", "n", "total"}."""

    bar: str
    n: int
    total: Optional[int]

    @classmethod
    def of(cls, event: dict[str, Any]) -> Optional[BarCount]:
        """The count an event is; None for another event (a training step)."""
        return cls(event["bar"], event["n"], event["total"]) if "bar" in event else None


@contextmanager
def listening(listener: Optional[Listener]) -> Iterator[None]:
    """Events of this process, and of the stages it spawns meanwhile, go to `listener`."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous


def active() -> bool:
    return _listener is not None


def emit(event: dict[str, Any]) -> None:
    if _listener is not None:
        try:
            _listener(event)
        except Exception as exc:  # a view of the job: never its failure
            log.warning("live progress: the listener failed (%s: %s)", type(exc).__name__, exc)
    elif os.environ.get(ENV):
        with open(os.environ[ENV], "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


class Tail:
    """The job's side of a child's event file: `forward()` hands the complete lines written
    since the last call to the listener."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def forward(self) -> None:
        if _listener is None or not self.path.exists():
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            emit(json.loads(line))


class Progress:
    """A tqdm bar whose count also goes out as an event ({"bar", "n", "total"}) at most every
    EMIT_EVERY_S, and when it closes."""

    def __init__(self, total: int, desc: str, unit: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit)
        self.emitted = 0.0

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.bar.update(n)
        if postfix:
            self.bar.set_postfix(**postfix)
        if time.monotonic() - self.emitted >= EMIT_EVERY_S:
            self._emit()

    def _emit(self) -> None:
        self.emitted = time.monotonic()
        emit({"bar": self.bar.desc, "n": self.bar.n, "total": self.bar.total})

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._emit()
        self.bar.close()


def track(items: Iterable[T], total: int, desc: str, unit: str) -> Iterator[T]:
    """`items`, counted on a Progress bar."""
    with Progress(total, desc, unit) as bar:
        for item in items:
            yield item
            bar.update()
