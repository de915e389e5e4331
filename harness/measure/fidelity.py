"""Fidelity benchmark: does the harness measure llama.cpp's speed as llama.cpp itself does?

Runs the harness's own speed test (the code behind every record) and llama.cpp's
`llama-bench` on the same GGUF file with the same threads, shapes and flash-attention
setting, and prints both prefill (pp) and decode (tg) tokens/s with their ratio. The two
alternate for several rounds and each reports its median round, so a machine whose speed
drifts (a shared VM) shifts both sides alike. `make bench-fidelity` builds
llama-bench from the llama.cpp source vendored in the pinned llama-cpp-python sdist.

    python -m harness.measure.fidelity --llama-bench PATH [--gguf FILE] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from harness.hardware import HardwareConfig
from harness.measure.config import MeasureConfig
from harness.measure.run import speed_test
from harness.runtimes.llama_cpp import LlamaCppRuntime

TOLERANCE = 0.05


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
    parser.add_argument("--llama-bench", type=Path, required=True)
    parser.add_argument("--gguf", type=Path, help="default: the newest Q4_K_M artifact in the cache")
    parser.add_argument("--cache", type=Path, default=Path("outputs/cache"))
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

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
    sys.exit(0 if worst <= TOLERANCE else 1)


if __name__ == "__main__":
    main()
