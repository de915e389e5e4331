"""Fidelity benchmark: does the harness measure llama.cpp's speed and memory as llama.cpp
itself, or a bare llama-cpp-python process, does?

Runs the harness's own speed test (the code behind every record) and llama.cpp's
`llama-bench` on the same GGUF file with the same threads, shapes and flash-attention
setting, and prints both prefill (pp) and decode (tg) tokens/s with their ratio. The two
alternate for several rounds and each reports its median round, so a machine whose speed
drifts (a shared VM) shifts both sides alike. `make bench-fidelity` builds
llama-bench from the llama.cpp source vendored in the pinned llama-cpp-python sdist.

Memory: the peak RSS of the harness's measuring process (the same imports as the
measurement child, the same runtime settings, measured the same way: a sampler around load
and decoding) against a bare llama-cpp-python process that loads the same file with the same
context and threads and decodes the same prompt, its peak from the kernel (ru_maxrss). Each
is run in a fresh process, alternating, and the median of the rounds is compared.

    python -m harness.measure.fidelity --llama-bench PATH [--gguf FILE] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from harness.hardware import HardwareConfig
from harness.measure.config import MeasureConfig
from harness.measure.run import speed_test
from harness.runtimes.llama_cpp import N_CTX, LlamaCppRuntime

TOLERANCE = 0.05
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
        probe = [sys.executable, "-m", "harness.measure.fidelity", "--probe-memory", str(gguf), "--threads", str(threads)]
        ours.append(float(subprocess.run(probe, capture_output=True, text=True, check=True).stdout.split()[-1]))
        cmd = [sys.executable, "-c", BARE_PROCESS, str(gguf), str(threads), str(N_CTX), PROBE_PROMPT, str(PROBE_TOKENS)]
        bare.append(float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1]))
    return ours, bare


def llama_bench(binary: Path, gguf: Path, threads: int, prompt_tokens: int, gen_tokens: int, reps: int) -> dict:
    """llama-bench's mean tokens/s for pp<prompt_tokens> and tg<gen_tokens>."""
    out = {}
    for name, p, n in (("prefill", prompt_tokens, 0), ("decode", 0, gen_tokens)):
        cmd = [str(binary), "-m", str(gguf), "-t", str(threads), "-p", str(p), "-n", str(n), "-r", str(reps),
               "-fa", "1", "-o", "json"]
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
    parser.add_argument("--llama-bench", type=Path, help="llama.cpp's llama-bench binary (make bench-fidelity builds it)")
    parser.add_argument("--gguf", type=Path, help="default: the newest Q4_K_M artifact in the cache")
    parser.add_argument("--cache", type=Path, default=Path("outputs/cache"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probe-memory", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_memory:
        print(harness_footprint(args.probe_memory, args.threads))
        return
    if args.llama_bench is None:
        parser.error("--llama-bench is required (make bench-fidelity builds it)")

    gguf = args.gguf or newest_artifact(args.cache, "Q4_K_M")
    cfg = MeasureConfig(prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens, min_reps=args.reps, min_seconds=0)
    runtime = LlamaCppRuntime(gguf, HardwareConfig(), args.threads)
    rounds_ref, rounds_ours = [], []
    for _ in range(args.rounds):
        rounds_ref.append(llama_bench(args.llama_bench, gguf, args.threads, args.prompt_tokens, args.gen_tokens, args.reps))
        rounds_ours.append(speed_test(runtime, cfg))

    def median_round(rounds, value):
        return sorted(rounds, key=value)[len(rounds) // 2]

    reference = {
        name: median_round(rounds_ref, lambda r: r[name][0])[name] for name in ("prefill", "decode")
    }
    ours = {}
    for name in ("prefill", "decode"):
        chosen = median_round(rounds_ours, lambda r: r[f"{name}_tokens_per_s"])
        ours[f"{name}_tokens_per_s"] = chosen[f"{name}_tokens_per_s"]
        ours[f"{name}_tokens_per_s_std"] = chosen[f"{name}_tokens_per_s_std"]

    print(f"{gguf} threads={args.threads} pp{args.prompt_tokens} tg{args.gen_tokens} "
          f"reps={args.reps} rounds={args.rounds} flash_attn=1")
    print(f"{'':8} {'harness tok/s':>16} {'llama-bench tok/s':>20} {'ratio':>7}")
    worst = 0.0
    for name in ("prefill", "decode"):
        mine, mine_std = ours[f"{name}_tokens_per_s"], ours[f"{name}_tokens_per_s_std"]
        ref, ref_std = reference[name]
        ratio = mine / ref
        worst = max(worst, abs(1 - ratio)) if name == "decode" else worst
        print(f"{name:8} {mine:9.1f} ± {mine_std:<5.1f} {ref:13.1f} ± {ref_std:<5.1f} {ratio:7.3f}")
    verdict = "within" if worst <= TOLERANCE else "OUTSIDE"
    print(f"decode agrees {verdict} {TOLERANCE:.0%} of llama-bench")

    ours_mib, bare_mib = memory_rounds(gguf, args.threads, args.rounds)
    mine, ref = statistics.median(ours_mib), statistics.median(bare_mib)
    memory_ratio = mine / ref
    print(f"\n{'':8} {'harness MiB':>16} {'bare llama-cpp-python MiB':>26} {'ratio':>7}")
    print(f"{'peak RSS':8} {mine:9.0f} ({min(ours_mib):.0f}-{max(ours_mib):.0f}) "
          f"{ref:15.0f} ({min(bare_mib):.0f}-{max(bare_mib):.0f}) {memory_ratio:7.3f}")
    memory_ok = abs(1 - memory_ratio) <= MEMORY_TOLERANCE
    print(f"peak RSS agrees {'within' if memory_ok else 'OUTSIDE'} {MEMORY_TOLERANCE:.0%} of a bare process "
          f"(n_ctx {N_CTX}, {args.threads} threads, {PROBE_TOKENS} tokens decoded; ranges over {args.rounds} rounds)")
    sys.exit(0 if worst <= TOLERANCE and memory_ok else 1)


if __name__ == "__main__":
    main()
