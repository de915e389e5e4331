"""slm-harness: sweep benchmarks of fine-tuned, quantized small language models."""

import logging

# Known-harmless notices that every CPU run would print: torchao (a gptqmodel dependency)
# cannot load its CUDA extensions nor find Triton, and bitsandbytes lacks the optional
# `kernels` package.
_QUIET_LOGGERS = ("torchao", "bitsandbytes.backends.cpu.ops")


def quiet_known_notices() -> None:
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
