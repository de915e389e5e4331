"""slm-harness: sweep benchmarks of fine-tuned, quantized small language models."""

import logging

# Libraries' log lines that bury a job's own: torchao (a gptqmodel dependency) says on every
# CPU run that it cannot load its CUDA extensions nor find Triton, bitsandbytes that it lacks
# the optional `kernels` package, and the HTTP clients under `openai` log every request.
_QUIET_LOGGERS = {
    "torchao": logging.ERROR,
    "bitsandbytes.backends.cpu.ops": logging.ERROR,
    "httpx": logging.WARNING,
    "httpx2": logging.WARNING,
}


def quiet_known_notices() -> None:
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
