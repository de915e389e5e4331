"""What a job ran, named from its resolved config: the `job` block of its record, its run
directory's and its W&B run's name. Here, not in the record: naming a model needs its kind
(`harness.sources`), and the record's schema imports nothing of the harness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.record import JobInfo
from harness.sources import BUILT, FILE, source_of


def job_info(resolved: dict[str, Any]) -> JobInfo:
    """From a resolved job config (plain dicts), valid or not: a field it lacks is None."""
    quant = resolved.get("quant") or {}
    model = resolved.get("model") or {}
    source = source_of(model.get("source"))  # None: a config that names no known source
    kind = source.KIND if source else BUILT
    built = kind == BUILT
    return JobInfo(
        # a model file is named for the file, so a sweep over files tells them apart
        model=Path(model["path"]).stem if kind == FILE and model.get("path") else model.get("name"),
        quant=quant.get("name") if built or source is None else source.VARIANT,
        format=quant.get("format") if built else None,
        bits=quant.get("bits") if built else None,
        gguf_type=quant.get("gguf_type") if built else None,
        train=(resolved.get("train") or {}).get("name") if built else "none",
        hardware=(resolved.get("hardware") or {}).get("name"),
        decoding=(resolved.get("measure") or {}).get("decoding"),
        languages=sorted((resolved.get("language") or {}).get("codes") or {}),
    )
