"""llama.cpp's `llama-server` with a job's GGUF, for the served load measurement: started on a
loopback port, waited for until healthy, stopped, and never left behind.

No orphan: the server runs in a process group of its own, asks Linux to kill it when the
process that started it dies (PR_SET_PDEATHSIG, which holds even after a SIGKILL of the sweep),
and leaves a pidfile under the cache; the next start reaps a server whose starter is gone.
Linux sends that signal when the *thread* that started the server ends, so a server lives
within one call on one thread (start, load, stop), as `measure_served` runs it."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import psutil

HOST = "127.0.0.1"  # loopback only: a measurement never listens beyond this machine
BINARY = "llama-server"
STOP_GRACE_S = 5.0
# What llama.cpp's log tail shows of a server that failed.
LOG_TAIL_LINES = 20
PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """The server could not start, stopped answering, or died: the message names the cause."""


def server_binary(configured: Optional[str]) -> Path:
    """llama-server where llama-bench and llama-quantize are found (`paths.llama_cpp_bin`, the
    build from the vendored source, the PATH); a ConfigError naming `make llama-server` if none."""
    from harness.formats.gguf import tool_path

    return tool_path(BINARY, configured, needed_by="measure.serve=server", make_target="llama-server")


def server_version(binary: Path) -> str:
    """`llama-server --version` (the llama.cpp build number and commit), and a digest of the
    binary and the libraries beside it, which a rebuild changes."""
    from harness.formats.gguf import tool_build

    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("version")]
    return f"{lines[0] if lines else 'version unknown'}; build {tool_build(binary)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise ServerError(
                f"port {HOST}:{port} is taken ({exc.strerror}; measure.server_port={port}): stop what listens "
                "there, or set measure.server_port=null for a free port"
            ) from None


def _die_with(starter: int):
    """What the server's process runs before exec: be killed when its starter dies, however it
    dies; and if the starter died before the request was made, go at once. libc is loaded
    here, before the fork: a child of a threaded process should not take the loader's lock."""
    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != starter:
            os._exit(1)

    return preexec


def reap(pid_dir: Path) -> list[int]:
    """Kill the servers that pidfiles in `pid_dir` name whose starter is gone (a sweep killed
    before it could stop them, on a system without PR_SET_PDEATHSIG); a server whose starter
    lives belongs to a job running beside this one and is left alone. The killed PIDs."""
    killed = []
    for path in pid_dir.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        if _alive(entry["owner_pid"], entry["owner_started"]):
            continue
        if _alive(entry["pid"], entry["started"]):
            _signal_group(entry["pid"], signal.SIGKILL)
            killed.append(entry["pid"])
        path.unlink(missing_ok=True)
    return killed


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the server leads its own group: pgid == pid
    except ProcessLookupError:
        pass  # it ended meanwhile


def _alive(pid: int, started: float) -> bool:
    """`pid` runs, and is the process that had it then (not a later one given the same number)."""
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False


class LlamaServer:
    """`with LlamaServer(...) as server:` a healthy server at `server.url` until the block ends."""

    def __init__(
        self,
        binary: Path,
        gguf: Path,
        threads: int,
        slots: int,
        ctx_per_slot: int,
        pid_dir: Path,
        log_path: Path,
        port: Optional[int] = None,
        start_timeout_s: float = 120.0,
        gpu: bool = False,
    ):
        self.binary, self.gguf, self.pid_dir, self.log_path = binary, gguf, pid_dir, log_path
        self.port_configured = port
        self.port = port or 0
        self.start_timeout_s = start_timeout_s
        self.args = [
            "--model", str(gguf),
            "--threads", str(threads),
            "--threads-batch", str(threads),
            "--parallel", str(slots),
            # every slot gets the context the in-process runtime has (llama_cpp.N_CTX)
            "--ctx-size", str(ctx_per_slot * slots),
            "--cont-batching",
            "--flash-attn", "on",  # as the in-process runtime runs it
            "--n-gpu-layers", "all" if gpu else "0",
            # no RAM cache of finished prompts' KV beside the slots (llama.cpp's default keeps
            # up to GiBs): it would charge the served footprint with every test prompt's cache;
            # each slot still reuses the prefix it shares with its last prompt
            "--cache-ram", "0",
        ]  # fmt: skip
        self.proc: Optional[subprocess.Popen] = None
        self.pidfile: Optional[Path] = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> "LlamaServer":
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        reap(self.pid_dir)
        if self.port_configured:
            check_port_free(self.port_configured)
        else:
            self.port = free_port()
        cmd = [str(self.binary), "--host", HOST, "--port", str(self.port), *self.args]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                process_group=0, preexec_fn=_die_with(os.getpid()),
            )  # fmt: skip
        self._write_pidfile()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_pidfile(self) -> None:
        assert self.proc is not None
        me = psutil.Process()
        entry = {
            "pid": self.proc.pid,
            "started": psutil.Process(self.proc.pid).create_time(),
            "owner_pid": me.pid,
            "owner_started": me.create_time(),
            "port": self.port,
            "model": str(self.gguf),
        }
        self.pidfile = self.pid_dir / f"{self.proc.pid}.json"
        self.pidfile.write_text(json.dumps(entry))

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self.check_running("while starting")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
        raise ServerError(
            f"llama-server did not become healthy within {self.start_timeout_s:g} s "
            f"(measure.server_start_timeout_s):\n{self.log_tail()}"
        )

    def check_running(self, when: str) -> None:
        """A ServerError with the log's tail if the server has exited."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is not None:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            raise ServerError(f"llama-server exited {when} ({how}); its log ends:\n{self.log_tail()}")

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])

    def stop(self) -> None:
        """SIGTERM to the server's group, SIGKILL after a grace; the pidfile removed."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.pidfile is not None:
            self.pidfile.unlink(missing_ok=True)
