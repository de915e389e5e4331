"""Run a measurement in a fresh Python process with a time limit.

One job's memory, threads and caches cannot leak into the next, its peak RSS is its own,
and a crash in a native runtime (a segfault in llama.cpp) or a timeout becomes an error
with the tail of the child's log instead of taking the sweep down. The child's output is
passed through to the terminal (progress bars stay visible) and kept in a log file.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from harness import quiet_known_notices
from harness.config import HardwareConfig, MeasureConfig, QuantConfig

LOG_TAIL_LINES = 30


class MeasurementFailed(RuntimeError):
    def __init__(self, reason: str, log_tail: str):
        super().__init__(f"{reason}\n--- last lines of the measurement log ---\n{log_tail}")
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


def run_isolated(spec, out_dir: Path, timeout_s: float) -> dict:
    """Measure `spec` (a MeasureSpec) in a child process; its result, or MeasurementFailed."""
    spec_path = out_dir / "measure_spec.json"
    result_path = out_dir / "measurement.json"
    log_path = out_dir / "measure.log"
    spec_path.write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    cmd = [sys.executable, "-m", "harness.measure.isolated", str(spec_path), str(result_path)]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pump = threading.Thread(target=_pump, args=(proc.stdout, log_file), daemon=True)
        pump.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pump.join()
            raise MeasurementFailed(f"measurement timed out after {timeout_s:g} s (measure.timeout_s)", _tail(log_path)) from None
        pump.join()
    if code != 0:
        if code < 0:
            reason = f"measurement process killed by {signal.Signals(-code).name}"
        else:
            reason = f"measurement process exited with code {code}"
        raise MeasurementFailed(reason, _tail(log_path))
    return json.loads(result_path.read_text())


def _load_spec(path: Path):
    from harness.measure.run import MeasureSpec

    raw = json.loads(path.read_text())
    raw["quant"] = QuantConfig(**raw["quant"])
    raw["hardware"] = HardwareConfig(**raw["hardware"])
    raw["measure"] = MeasureConfig(**raw["measure"])
    return MeasureSpec(**raw)


def main(argv: list[str]) -> None:
    import logging

    from harness.measure.run import measure
    from harness.store import write_json_atomic

    logging.basicConfig(level=logging.WARNING)
    quiet_known_notices()
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    write_json_atomic(result_path, measure(_load_spec(spec_path)))


if __name__ == "__main__":
    main(sys.argv[1:])
