"""Finding result records on disk, and the `Point` each becomes in the tables that compare them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from harness.measure.machine import machine_label
from harness.record import FAILED, OK, PREDICTIONS, RECORD, Prediction, Record
from harness.report.columns import COLUMNS, Column, Figure

JOB_KEYS = ("model", "quant", "train", "decoding", "hardware", "languages")


def read_sweep_records(sweep_dir: Path) -> list[Record]:
    """The records of one Hydra multirun, in job order."""
    paths = sorted(sweep_dir.glob(f"*/{RECORD}"), key=lambda p: int(p.parent.name.split("_")[0]))
    return [Record.read(p) for p in paths]


def read_predictions(record: Record) -> Optional[list[Prediction]]:
    """Every test query's answer, as the measurement wrote them beside the record; None where
    the record has no such file (a record written by hand, or moved)."""
    path = Path(record.record_dir or "") / PREDICTIONS
    if not record.record_dir or not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return [Prediction.from_json(json.loads(line)) for line in f]


def job_value(record: Record, key: str) -> Optional[str]:
    """A job key's value as the tables name it (the languages joined: 'en+hr')."""
    value: Optional[str] | list[str] = getattr(record.job, key)
    return "+".join(value) if isinstance(value, list) else value


def _job(record: Record) -> tuple[str, ...]:
    return tuple(str(job_value(record, k)) for k in JOB_KEYS)


def collect(roots: list[Path]) -> list[Record]:
    """Every record under the given directories, each measurement once (a record is copied
    into each job directory that reused it). A failure is kept only while no record of the
    same job succeeded, so a fixed job drops off the list of failures."""
    ok: dict[str, Record] = {}
    failed: dict[tuple[tuple[str, ...], Optional[str]], Record] = {}
    for root in roots:
        for path in sorted(root.rglob(RECORD)):
            record = Record.read(path)
            if record.status == OK:
                # a record written before its key was kept is known by its cache entry
                entry = record.keys.record or str(Path(record.record_dir or path.parent).resolve())
                ok.setdefault(entry, record)
            else:
                failed[(_job(record), record.error)] = record
    succeeded = {_job(r) for r in ok.values()}
    return list(ok.values()) + [r for (job, _), r in failed.items() if job not in succeeded]


def varying_keys(records: list[Record]) -> list[str]:
    """The job keys that tell these records apart (always the quant)."""
    return [k for k in JOB_KEYS if k == "quant" or len({job_value(r, k) for r in records}) > 1]


def shared_caption(records: list[Record]) -> str:
    """'model=..., train=...': the job keys every record has in common."""
    if not records:
        return ""
    return ", ".join(f"{k}={job_value(records[0], k)}" for k in JOB_KEYS if k not in varying_keys(records))


def variant(record: Record, keys: list[str]) -> str:
    return " ".join(str(job_value(record, k)) for k in keys)


# Config branches that say where a job wrote or logged, not what it measured.
_NOT_WHAT_RAN = ("paths", "logger", "force", "hydra")


def _leaves(config: Any, prefix: str = "") -> dict[str, str]:
    """A resolved config as dotted keys (train.epochs) and their values, as text."""
    if isinstance(config, dict):
        out: dict[str, str] = {}
        for k, v in config.items():
            if not prefix and k in _NOT_WHAT_RAN:
                continue
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(config, sort_keys=True) if isinstance(config, list) else str(config)}


def _tell_apart(names: list[str], records: list[Record]) -> list[str]:
    """Names that two records share, completed with what tells them apart: the config keys
    whose values differ between them (`train.epochs=2`), else their test data."""
    out = list(names)
    for name in set(names):
        same = [i for i, n in enumerate(names) if n == name]
        if len(same) < 2:
            continue
        leaves = [_leaves(records[i].config) for i in same]
        differ = sorted(k for k in set().union(*leaves) if len({leaf.get(k) for leaf in leaves}) > 1)
        for i, leaf in zip(same, leaves):
            if differ:
                out[i] = f"{name} " + " ".join(f"{k}={leaf.get(k)}" for k in differ)
            else:
                out[i] = f"{name} data={records[i].keys.dataset}"
    return out


@dataclass
class Point:
    """One successful record as the tables compare it: its name, what it ran, its figures by
    column key (`harness.report.columns.COLUMNS`, derived ones included), and what explains
    them. `memory_kind` names what its peak memory is: VRAM on a GPU (the process's, or the
    whole device's where NVML could not tell the process apart), RSS on the CPU (a served
    row's: its server's); a GPU row without a VRAM figure is unmeasured, never its host RSS."""

    variant: str
    model: Optional[str] = None
    quant: Optional[str] = None
    train: Optional[str] = None
    decoding: Optional[str] = None
    hardware: Optional[str] = None
    languages: Optional[str] = None
    format: Optional[str] = None
    machine: str = ""
    figures: dict[str, Figure] = field(default_factory=dict)
    memory_kind: str = ""
    energy_method: Optional[str] = None
    energy_unmeasured_reason: Optional[str] = None
    energy_estimate_method: Optional[str] = None
    record_dir: Optional[str] = None

    def value(self, key: str) -> Figure:
        """A figure by its column key; None where unmeasured."""
        return self.figures.get(key)

    def cell(self, column: Column) -> str:
        keys = column.key if isinstance(column.key, tuple) else (column.key,)
        return formatted([self.value(k) for k in keys], column.fmt)

    def flat(self) -> dict[str, Any]:
        """As a CSV row or a W&B table row: the names, then the figures, then what explains them."""
        names = {k: getattr(self, k) for k in ("variant", *JOB_KEYS, "format", "machine")}
        return {
            **names,
            **self.figures,
            "memory_kind": self.memory_kind,
            "energy_method": self.energy_method,
            "energy_unmeasured_reason": self.energy_unmeasured_reason,
            "energy_estimate_method": self.energy_estimate_method,
            "record_dir": self.record_dir,
        }


def points(records: list[Record]) -> list[Point]:
    """The successful records compared in one table, each a `Point` named by the job keys that
    vary among them, and by its machine where they ran on more than one (one quant on a laptop
    and on a server is two variants, never one). Records that those do not tell apart (two
    runs of one quant with other `train.*` options, or on other data) are named for what
    differs, never the same."""
    keys = varying_keys(records)
    out = [point(r, keys) for r in records]
    if len({_machine(r) for r in records}) > 1:
        for p in out:
            p.variant = f"{p.variant} on {p.machine}"
    for p, name in zip(out, _tell_apart([p.variant for p in out], records)):
        p.variant = name
    return out


# How a GPU row's peak memory was read (the record's vram_method), as the report names it.
MEMORY_KINDS = {"nvml_process": "VRAM", "nvml_device_used": "device VRAM (all processes)", None: "VRAM unmeasured"}


def _peak_memory(record: Record, on_gpu: bool) -> tuple[Figure, str]:
    """Peak memory on the device the model runs on, and what it is; on a CPU row that was
    served, the server's peak RSS under load (what serving it takes), not the measuring
    process's."""
    memory = record.metrics.memory
    if on_gpu:
        return memory.peak_vram_mib, MEMORY_KINDS[memory.vram_method]
    if record.served:
        return record.served.server_peak_rss_mib, "server RSS"
    return memory.peak_rss_mib, "RSS"


def _intervals(record: Record) -> dict[str, Figure]:
    """Each interval's ends, by `<key>_ci95_low` / `_high`."""
    out: dict[str, Figure] = {}
    for c in COLUMNS:
        if c.read_ci95 is not None:
            low, high = c.read_ci95(record) or (None, None)
            out.update({f"{c.name}_ci95_low": low, f"{c.name}_ci95_high": high})
    return out


def point(record: Record, keys: list[str]) -> Point:
    """One successful record as a `Point`, named by the job keys given."""
    energy = record.metrics.energy
    peak, kind = _peak_memory(record, record.config_value("hardware", "device") == "cuda")
    figures = {c.name: c.read(record) for c in COLUMNS if c.read is not None}
    return Point(
        variant(record, keys),
        model=job_value(record, "model"),
        quant=job_value(record, "quant"),
        train=job_value(record, "train"),
        decoding=job_value(record, "decoding"),
        hardware=job_value(record, "hardware"),
        languages=job_value(record, "languages"),
        format=record.job.format,
        machine=_machine(record),
        figures={**figures, **_intervals(record), "peak_memory_mib": peak},
        memory_kind=kind,
        energy_method=energy.energy_method,
        energy_unmeasured_reason=energy.energy_unmeasured_reason,
        energy_estimate_method=energy.energy_estimate_method,
        record_dir=record.record_dir,
    )


def formatted(values: list[Any], fmt: str) -> str:
    """Figures as a table cell; 'unmeasured' where one is None."""
    return "unmeasured" if None in values else fmt.format(*values)


def cell(row: Mapping[str, Any], key: str | tuple[str, ...], fmt: str) -> str:
    """A CSV row's figure (or figures, for a tuple of keys) for a table; 'unmeasured' for None."""
    return formatted([row.get(k) for k in (key if isinstance(key, tuple) else (key,))], fmt)


def by_hardware(records: list[Record]) -> dict[str, list[Record]]:
    """Successful records grouped by hardware: a frontier only compares like with like. Records
    of one hardware config measured on different machines are never mixed: each machine gets a
    group of its own, named for it."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        if r.status == OK:
            groups.setdefault(str(r.job.hardware), []).append(r)
    out: dict[str, list[Record]] = {}
    for hardware, group in groups.items():
        machines = {json.dumps(r.machine and r.machine.to_json(), sort_keys=True) for r in group}
        for r in group:
            name = hardware if len(machines) == 1 else f"{hardware} on {_machine(r)}"
            out.setdefault(name, []).append(r)
    return out


def _machine(record: Record) -> str:
    return machine_label(record.machine.to_json()) if record.machine else "an unrecorded machine"


def failures(records: list[Record], status: str = FAILED) -> list[str]:
    """'quant: Error: reason' for each record of that status (failed, or skipped), the
    reason's first line."""
    out = []
    for r in records:
        if r.status == status:
            reason = (r.error or "").partition("\n")[0]
            out.append(f"{r.job.quant}: {r.error_type}: {reason}")
    return out
