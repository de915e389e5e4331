"""Fidelity benchmark: does the harness measure llama.cpp's speed and memory as llama.cpp
itself, or a bare llama-cpp-python process, does?

Runs the harness's own speed test (the code behind every record) and llama.cpp's
`llama-bench` on the same GGUF file with the same threads, shapes and flash-attention
setting, and prints both prefill (pp) and decode (tg) tokens/s with their ratio. The two
alternate for several rounds; each round's ratio is taken between figures measured back to
back, so a machine whose speed drifts (a shared VM) shifts both sides alike, and the verdict
comes from the median ratio's interval: agrees, differs, or undecided (inside the noise). `make bench-fidelity` builds
llama-bench from the llama.cpp source vendored in the pinned llama-cpp-python sdist.

ONNX Runtime GenAI, where an ORT artifact is in the cache (or `--ort-model DIR`) and the
[onnx] extra is installed: the harness's speed test on its runtime against ONNX Runtime GenAI's
own benchmark loop (`benchmark/python/benchmark_e2e.py` in its repository, not in the wheel;
`ort_bench` is its timing core on onnxruntime_genai alone), the same shapes and threads, in
the same alternating paired rounds.

Memory: the peak RSS of the harness's measuring process (the same imports as the
measurement child, the same runtime settings, measured the same way: a sampler around load
and decoding) against a bare llama-cpp-python process that loads the same file with the same
context and threads and decodes the same prompt, its peak from the kernel (ru_maxrss). Each
is run in a fresh process, alternating, and the median of the rounds is compared.

OpenVINO, where an OpenVINO artifact is in the cache (or `--openvino-model DIR`) and the
[openvino] extra is installed: the harness's speed test on its runtime against OpenVINO
GenAI's benchmark sample's timing (`samples/python/text_generation/benchmark_genai.py` in its
repository; `openvino_bench` reproduces it on openvino_genai alone), likewise.

    python -m harness.measure.fidelity --llama-bench PATH [--gguf FILE] [--ort-model DIR ...]
        [--openvino-model DIR ...] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.hardware import HardwareConfig
from harness.measure.config import MeasureConfig
from harness.measure.run import _FILLER, speed_test
from harness.measure.stats import median_interval
from harness.record import Speed
from harness.runtimes.llama_cpp import N_CTX, LlamaCppRuntime

TOLERANCE = 0.05
# ONNX Runtime GenAI's and OpenVINO GenAI's references are their benchmark scripts' timing
# reproduced on their Python APIs (the scripts ship in neither wheel): a Python call per token,
# on both sides, is itself a few percent at 100-200 tok/s, so a band narrower than 10% cannot
# be resolved on 2 cores.
PEER_TOLERANCE = 0.10
MEMORY_TOLERANCE = 0.10
PROBE_PROMPT = "<|im_start|>user\nwhere is my order #123456<|im_end|>\n<|im_start|>assistant\n"
PROBE_TOKENS = 16
# A bare llama-cpp-python server's core: load, prefill, decode; nothing else imported.
BARE_PROCESS = """
import resource, sys
import llama_cpp
path, threads, n_ctx, prompt, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads, n_threads_batch=threads,
                      flash_attn=True, verbose=False)
ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
llm.eval(ids)
for _ in range(n):
    llm.eval([ids[-1]])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def harness_footprint(gguf: Path, threads: int) -> float:
    """Peak RSS (MiB) of a process that holds what the harness's measuring process holds,
    measured as the measurement measures it."""
    import harness.isolated  # noqa: F401  (the measuring child's own imports)
    from harness.measure.memory import PeakRSSSampler
    from harness.measure.run import greedy_answer

    with PeakRSSSampler() as rss:
        rt = LlamaCppRuntime(gguf, HardwareConfig(), threads)
        greedy_answer(rt, rt.tokenize(PROBE_PROMPT), PROBE_TOKENS)
        rt.start(rt.tokenize(PROBE_PROMPT))
        for _ in range(PROBE_TOKENS):
            rt.step(0)
    return rss.peak_mib


def memory_rounds(gguf: Path, threads: int, rounds: int) -> tuple[list[float], list[float]]:
    """(harness peaks, bare peaks), each from a fresh process, alternating."""
    ours, bare = [], []
    for _ in range(rounds):
        probe = [
            sys.executable,
            "-m",
            "harness.measure.fidelity",
            "--probe-memory",
            str(gguf),
            "--threads",
            str(threads),
        ]
        ours.append(float(subprocess.run(probe, capture_output=True, text=True, check=True).stdout.split()[-1]))
        cmd = [sys.executable, "-c", BARE_PROCESS, str(gguf), str(threads), str(N_CTX), PROBE_PROMPT, str(PROBE_TOKENS)]
        bare.append(float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1]))
    return ours, bare


AGREES, DIFFERS, UNDECIDED = "agrees", "DIFFERS", "UNDECIDED"
# exit status per decode verdict: only agreement passes
EXIT = {AGREES: 0, DIFFERS: 1, UNDECIDED: 2}


def agreement(ours: Sequence[float], reference: Sequence[float], tolerance: float) -> tuple[float, list[float], str]:
    """(median ratio, its interval, verdict) for paired rounds of two speed measurements.

    Each round's two figures were taken back to back, so their ratio cancels the machine's
    drift between rounds; the verdict comes from the median ratio's interval, not from one
    figure: the interval inside 1 ± tolerance agrees, wholly outside it differs, and one
    that straddles the band's edge is undecided, a difference inside the noise."""
    ratios = [a / b for a, b in zip(ours, reference, strict=True)]
    low, high = median_interval(ratios)
    if 1 - tolerance <= low and high <= 1 + tolerance:
        verdict = AGREES
    elif high < 1 - tolerance or low > 1 + tolerance:
        verdict = DIFFERS
    else:
        verdict = UNDECIDED
    return statistics.median(ratios), [low, high], verdict


def llama_bench(binary: Path, gguf: Path, threads: int, prompt_tokens: int, gen_tokens: int, reps: int) -> dict:
    """llama-bench's mean tokens/s for pp<prompt_tokens> and tg<gen_tokens>."""
    out = {}
    for name, p, n in (("prefill", prompt_tokens, 0), ("decode", 0, gen_tokens)):
        cmd = [
            str(binary),
            "-m",
            str(gguf),
            "-t",
            str(threads),
            "-p",
            str(p),
            "-n",
            str(n),
            "-r",
            str(reps),
            "-fa",
            "1",
            "-o",
            "json",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(done.stdout)[0]
        out[name] = (row["avg_ts"], row["stddev_ts"])
    return out


def newest_artifact(cache: Path, gguf_type: str) -> Path:
    files = sorted(cache.glob(f"artifact/*/model-{gguf_type}.gguf"), key=lambda p: p.stat().st_mtime)
    if not files:
        sys.exit(f"no model-{gguf_type}.gguf under {cache}/artifact: run `make run` first, or pass --gguf")
    return files[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--llama-bench", type=Path, help="llama.cpp's llama-bench binary (make bench-fidelity builds it)"
    )
    parser.add_argument("--gguf", type=Path, help="default: the newest Q4_K_M artifact in the cache")
    for peer in PEERS:
        parser.add_argument(
            f"--{peer.flag.replace('_', '-')}",
            type=Path,
            action="append",
            metavar="DIR",
            help=f"a {peer.name} model directory, repeatable (default: the newest in the cache)",
        )
    parser.add_argument("--cache", type=Path, default=Path("outputs/cache"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=10)
    # 9: the fewest rounds whose median interval is narrower than their whole range (ranks 2 and 8)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--probe-memory", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_memory:
        print(harness_footprint(args.probe_memory, args.threads))
        return
    if args.llama_bench is None:
        parser.error("--llama-bench is required (make bench-fidelity builds it)")

    gguf = args.gguf or newest_artifact(args.cache, "Q4_K_M")
    decode_exit = compare_speed(args, gguf)
    memory_ok = compare_memory(gguf, args.threads, args.rounds)
    peer_exits = [compare_peer(args, peer) for peer in PEERS]
    sys.exit(max([decode_exit, *peer_exits]) or (0 if memory_ok else 1))


def compare_speed(args: argparse.Namespace, gguf: Path) -> int:
    """Alternating rounds of the harness's speed test and llama-bench's on the same file; the
    table, and the exit code of the decode verdict."""
    cfg = MeasureConfig(prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens, min_reps=args.reps, min_seconds=0)
    runtime = LlamaCppRuntime(gguf, HardwareConfig(), args.threads)
    rounds_ref, rounds_ours = [], []
    for round_ in range(args.rounds):
        # alternate which side runs first, so drift within a round does not favour one side
        first_ours = round_ % 2 == 1
        if first_ours:
            rounds_ours.append(speed_test(runtime, cfg))
        rounds_ref.append(
            llama_bench(args.llama_bench, gguf, args.threads, args.prompt_tokens, args.gen_tokens, args.reps)
        )
        if not first_ours:
            rounds_ours.append(speed_test(runtime, cfg))

    print(
        f"{gguf} threads={args.threads} pp{args.prompt_tokens} tg{args.gen_tokens} "
        f"reps={args.reps} rounds={args.rounds} flash_attn=1"
    )
    return EXIT[speed_verdicts("llama-bench", rounds_ours, rounds_ref)["decode"]]


def speed_verdicts(
    reference: str, rounds_ours: list[Speed], rounds_ref: list[dict], tolerance: float = TOLERANCE
) -> dict[str, str]:
    """Print prefill and decode of the harness against `reference`, round by round paired;
    the verdict of each."""
    print(f"{'':8} {'harness tok/s':>20} {reference + ' tok/s':>20} {'ratio (interval)':>22}  verdict")
    verdicts = {}
    ours = {
        "prefill": [r.prefill_tokens_per_s for r in rounds_ours],
        "decode": [r.decode_tokens_per_s for r in rounds_ours],
    }
    for name, mine in ours.items():
        ref = [r[name][0] for r in rounds_ref]
        ratio, (low, high), verdicts[name] = agreement(mine, ref, tolerance)
        print(
            f"{name:8} {statistics.median(mine):9.1f} ({min(mine):.0f}-{max(mine):.0f}) "
            f"{statistics.median(ref):11.1f} ({min(ref):.0f}-{max(ref):.0f}) "
            f"{ratio:9.3f} ({low:.3f}-{high:.3f})  {verdicts[name]}"
        )
    print(
        f"ratio: the median over rounds of harness / {reference}, each round's pair run back to back; "
        f"interval: the median's, over {len(rounds_ours)} rounds; band: ±{tolerance:.0%}; "
        f"UNDECIDED: the interval straddles the band, rerun on quieter cores or with more --rounds"
    )
    return verdicts


def compare_memory(gguf: Path, threads: int, rounds: int) -> bool:
    """The harness's measuring process's peak RSS against a bare llama-cpp-python process's."""
    ours_mib, bare_mib = memory_rounds(gguf, threads, rounds)
    mine, ref = statistics.median(ours_mib), statistics.median(bare_mib)
    memory_ratio = mine / ref
    print(f"\n{'':8} {'harness MiB':>16} {'bare llama-cpp-python MiB':>26} {'ratio':>7}")
    print(
        f"{'peak RSS':8} {mine:9.0f} ({min(ours_mib):.0f}-{max(ours_mib):.0f}) "
        f"{ref:15.0f} ({min(bare_mib):.0f}-{max(bare_mib):.0f}) {memory_ratio:7.3f}"
    )
    memory_ok = abs(1 - memory_ratio) <= MEMORY_TOLERANCE
    print(
        f"peak RSS agrees {'within' if memory_ok else 'OUTSIDE'} {MEMORY_TOLERANCE:.0%} of a bare process "
        f"(n_ctx {N_CTX}, {threads} threads, {PROBE_TOKENS} tokens decoded; ranges over {rounds} rounds)"
    )
    return memory_ok


def ort_bench(model_dir: Path, threads: int, prompt_tokens: int, gen_tokens: int, reps: int) -> dict:
    """ONNX Runtime GenAI's benchmark loop as benchmark_e2e.py times it: a fresh generator per
    repetition (after one warm-up), the prompt appended in one call (prefill), then one
    `generate_next_token` per token, each timed alone (decode: one over the mean time per
    token). Its own model, with the runtime's session options; the decode starts from a
    one-token prompt, as llama-bench's tg and the harness's decode do."""
    import onnxruntime_genai as og

    from harness.runtimes.onnx_genai import session_overlay

    config = og.Config(str(model_dir))
    config.clear_providers()
    config.overlay(session_overlay(threads))
    model = og.Model(config)
    filler = [int(t) for t in og.Tokenizer(model).encode(_FILLER)]
    prompt = (filler * (prompt_tokens // len(filler) + 1))[:prompt_tokens]

    def generator(length: int):
        params = og.GeneratorParams(model)
        # min_length: no end of turn cuts a repetition short (benchmark_e2e.py sets it too)
        params.set_search_options(do_sample=False, max_length=length, min_length=length)
        return og.Generator(model, params)

    prefill_s, token_s = [], []
    for rep in range(reps + 1):
        g = generator(prompt_tokens + 1)
        t0 = time.perf_counter()
        g.append_tokens(prompt)
        elapsed = time.perf_counter() - t0
        g = generator(gen_tokens + 2)
        g.append_tokens(prompt[:1])
        g.generate_next_token()  # the first token is chosen from the prompt's logits: no decode
        times = []
        for _ in range(gen_tokens):
            t0 = time.perf_counter()
            g.generate_next_token()
            times.append(time.perf_counter() - t0)
        if rep:  # the first is the warm-up
            prefill_s.append(elapsed)
            token_s += times
    prefill = [prompt_tokens / s for s in prefill_s]
    return {
        "prefill": (prompt_tokens / statistics.mean(prefill_s), statistics.stdev(prefill)),
        "decode": (1 / statistics.mean(token_s), statistics.stdev([1 / s for s in token_s])),
    }


def newest_model_dir(cache: Path, marker: str) -> Path | None:
    """The newest artifact directory in the cache that holds `marker` (a runtime's model file)."""
    found = sorted(cache.glob(f"artifact/*/model/{marker}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def openvino_bench(model_dir: Path, threads: int, prompt_tokens: int, gen_tokens: int, reps: int) -> dict:
    """OpenVINO GenAI's benchmark sample (benchmark_genai.py) as it times: `LLMPipeline.generate`
    on token ids, its own perf metrics, time to first token (prefill) and time per output
    token (decode: one over its mean), end of turn ignored. Its own pipeline on the same IR
    with the runtime's CPU settings, on the stateful (SDPA) backend the harness's runtime
    runs, no prefix cache; the decode starts from a one-token prompt, as llama-bench's tg and
    the harness's decode do."""
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    from harness.runtimes.openvino_genai import compile_properties

    pipe = og.LLMPipeline(str(model_dir), "CPU", ATTENTION_BACKEND="SDPA", **compile_properties(threads))
    filler = [int(t) for t in pipe.get_tokenizer().encode(_FILLER, add_special_tokens=False).input_ids.data[0]]
    prompt = (filler * (prompt_tokens // len(filler) + 1))[:prompt_tokens]

    def run(ids: list[int], new_tokens: int):
        config = og.GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, ignore_eos=True)
        inputs = og.TokenizedInputs(
            ov.Tensor(np.array([ids], dtype=np.int64)), ov.Tensor(np.ones((1, len(ids)), np.int64))
        )
        return pipe.generate(inputs, config).perf_metrics

    prefill_s, token_s = [], []
    for rep in range(reps + 1):
        prefill = run(prompt, 1).get_ttft().mean / 1000
        decode = run(prompt[:1], gen_tokens + 1).get_tpot().mean / 1000
        if rep:  # the first is the warm-up
            prefill_s.append(prefill)
            token_s.append(decode)
    return {
        "prefill": (
            prompt_tokens / statistics.mean(prefill_s),
            statistics.stdev([prompt_tokens / s for s in prefill_s]),
        ),
        "decode": (1 / statistics.mean(token_s), statistics.stdev([1 / s for s in token_s])),
    }


@dataclass(frozen=True)
class Peer:
    """A runtime whose speed the harness checks against that runtime's own benchmark timing."""

    name: str
    reference: str  # the benchmark it is checked against, as the table heads it
    distribution: str  # what must be installed
    extra: str  # the slm-harness extra that installs it
    marker: str  # the file that makes a cached artifact directory one of its models
    example: str  # a quant that builds one
    flag: str  # the command-line option naming directories to check
    open: Callable[[Path, int], Any]  # the harness's runtime on a directory, with threads
    bench: Callable[[Path, int, int, int, int], dict]  # the reference: one round's {prefill, decode}


def _ort_runtime(model_dir: Path, threads: int):
    from harness.runtimes.onnx_genai import OnnxGenAIRuntime

    return OnnxGenAIRuntime(model_dir, HardwareConfig(), threads)


def _openvino_runtime(model_dir: Path, threads: int):
    from harness.runtimes.openvino_genai import OpenVINORuntime

    return OpenVINORuntime(model_dir, HardwareConfig(), threads)


PEERS = (
    Peer(
        name="ONNX Runtime GenAI",
        reference="ORT GenAI loop",
        distribution="onnxruntime_genai",
        extra="onnx",
        marker="genai_config.json",
        example="ort_int4",
        flag="ort_model",
        open=_ort_runtime,
        bench=ort_bench,
    ),
    Peer(
        name="OpenVINO",
        reference="OV GenAI bench",
        distribution="openvino_genai",
        extra="openvino",
        marker="openvino_model.xml",
        example="openvino_int8",
        flag="openvino_model",
        open=_openvino_runtime,
        bench=openvino_bench,
    ),
)


def compare_peer(args: argparse.Namespace, peer: Peer) -> int:
    """The harness's speed test on `peer`'s runtime against its own benchmark timing, on each
    model directory asked for (default: the newest in the cache); the worst exit code of the
    decode verdicts (0 when there is nothing to compare, said so)."""
    from harness.extras import installed_version

    model_dirs = getattr(args, peer.flag) or [d for d in [newest_model_dir(args.cache, peer.marker)] if d]
    if installed_version(peer.distribution) is None or not model_dirs:
        print(
            f"\n{peer.name}: skipped (needs pip install 'slm-harness[{peer.extra}]' and a model: "
            f"`python -m harness quant={peer.example}` builds one, or pass --{peer.flag.replace('_', '-')} DIR)"
        )
        return 0
    exits = []
    for model_dir in model_dirs:
        runtime = peer.open(model_dir, args.threads)
        # ORT GenAI's MatMulNBits picks its kernel inside the graph: no kernel name to show
        kernel = f", {runtime.kernel}" if runtime.kernel else ""
        title = f"{model_dir} ({peer.name} {runtime.version}{kernel})"
        bench = lambda d=model_dir: peer.bench(d, args.threads, args.prompt_tokens, args.gen_tokens, args.reps)  # noqa: E731
        exits.append(compare_rounds(args, title, peer.reference, runtime, bench))
    return max(exits)


def compare_rounds(args: argparse.Namespace, title: str, reference: str, runtime, bench) -> int:
    """Alternating rounds of the harness's speed test on `runtime` and a runtime's own
    benchmark (`bench`, one round's {prefill, decode}); the exit code of the decode verdict."""
    cfg = MeasureConfig(prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens, min_reps=args.reps, min_seconds=0)
    ours, ref = [], []
    for round_ in range(args.rounds):
        if round_ % 2:
            ours.append(speed_test(runtime, cfg))
        ref.append(bench())
        if not round_ % 2:
            ours.append(speed_test(runtime, cfg))
    print(
        f"\n{title} threads={args.threads} pp{args.prompt_tokens} tg{args.gen_tokens} "
        f"reps={args.reps} rounds={args.rounds}"
    )
    return EXIT[speed_verdicts(reference, ours, ref, PEER_TOLERANCE)["decode"]]


if __name__ == "__main__":
    main()
