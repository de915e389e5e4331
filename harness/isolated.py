"""Run a heavy stage (train, merge, quantize, measure) in a fresh Python process with a time
limit.

One job's memory, threads, caches and library patches (gptqmodel's, for one) cannot leak into
the next; a measured process's peak RSS is its own; and a crash in native code (a segfault in
llama.cpp) or a timeout becomes an error with the tail of the child's log instead of taking
the sweep down. The child's output is passed through to the terminal (progress bars stay
visible) and kept in a log file; its progress events reach the job's listener while it runs
(`harness.live`).

    python -m harness.isolated STAGE CALL.pkl RESULT.json

The call is a module-level function and its keyword arguments, pickled; the function's
return value (JSON, or None) is the result.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from harness import live
from harness.hardware import child_env
from harness.store import write_json_atomic

LOG_TAIL_LINES = 30


class StageFailed(RuntimeError):
    """A stage's process crashed, timed out or raised; the message ends with its log's tail."""

    def __init__(self, reason: str, log_tail: str):
        super().__init__(f"{reason}\n--- last lines of the {reason.split()[0]} log ---\n{log_tail}")
        self.reason = reason
        self.log_tail = log_tail


def _tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = [ln.split("\r")[-1] for ln in text.splitlines()]
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _pump(source, log_file) -> None:
    for chunk in iter(lambda: source.read1(4096), b""):
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
        log_file.write(chunk)
        log_file.flush()


def run_isolated(
    stage: str,
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    work_dir: Path,
    timeout_s: float,
    limit_name: str,
    device: str,
) -> Any:
    """Call `fn(**kwargs)` in a child process; its return value, or StageFailed. `stage`
    names the work in messages and on the child's command line; the call, the result and
    the log are kept in `work_dir` as `<stage>_call.pkl`, `<stage>_result.json` and
    `<stage>.log`; `limit_name` is the config key that sets `timeout_s`; `device` is where the
    work runs (a CPU stage's process sees no GPU: `hardware.child_env`)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    call_path = work_dir / f"{stage}_call.pkl"
    result_path = work_dir / f"{stage}_result.json"
    log_path = work_dir / f"{stage}.log"
    call_path.write_bytes(pickle.dumps((fn, kwargs)))
    progress_path = work_dir / f"{stage}_progress.jsonl"
    progress_path.unlink(missing_ok=True)
    events = live.Tail(progress_path)
    cmd = [sys.executable, "-m", "harness.isolated", stage, str(call_path), str(result_path)]
    env = {**os.environ, **child_env(device), **({live.ENV: str(progress_path)} if live.active() else {})}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        pump = threading.Thread(target=_pump, args=(proc.stdout, log_file), daemon=True)
        pump.start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                code = proc.wait(timeout=min(live.POLL_S, max(0.0, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                events.forward()
                if time.monotonic() >= deadline:
                    proc.kill()
                    proc.wait()
                    pump.join()
                    raise StageFailed(
                        f"{stage} timed out after {timeout_s:g} s ({limit_name})", _tail(log_path)
                    ) from None
        pump.join()
        events.forward()
    if code != 0:
        if code < 0:
            reason = f"{stage} process killed by {signal.Signals(-code).name}"
        else:
            reason = f"{stage} process exited with code {code}"
        raise StageFailed(reason, _tail(log_path))
    return json.loads(result_path.read_text())


def isolated_build(
    stage: str, fn: Callable[..., Any], kwargs: dict[str, Any], timeout_s: float, device: str
) -> Callable[[Path], None]:
    """A `cached_dir` build that runs `fn(**kwargs, out=...)` in a spawned process on `device`,
    keeping its log beside what it builds."""

    def build(out: Path) -> None:
        t0 = time.perf_counter()
        run_isolated(stage, fn, {**kwargs, "out": out}, out / "build", timeout_s, "build_timeout_s", device)
        write_json_atomic(out / "build" / "wall.json", {"wall_s": time.perf_counter() - t0})

    return build


def main(argv: list[str]) -> None:
    import logging

    from harness import quiet_known_notices

    logging.basicConfig(level=logging.WARNING)
    quiet_known_notices()
    _stage, call_path, result_path = argv[0], Path(argv[1]), Path(argv[2])
    fn, kwargs = pickle.loads(call_path.read_bytes())
    write_json_atomic(result_path, fn(**kwargs))


if __name__ == "__main__":
    main(sys.argv[1:])
