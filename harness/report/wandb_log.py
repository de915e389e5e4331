"""Weights & Biases: one run per job (job_type `evaluate`, the format and variant as tags),
started as the job starts, its training and progress logged live, its record at the end; and
one summary run per sweep.

Offline unless the user asks for online (WANDB_MODE or logger.mode): runs are files under
<logger.dir>/wandb, uploaded later with `wandb sync`. W&B is a view of the records, never
their keeper: any W&B failure is a warning, and the record on disk stands.

Each job's run carries its lineage as artifacts, upstream first: the dataset, the (fine-tuned)
model, the artifact measured and the record, each a reference to its cache directory (nothing
is copied) naming the one it was made from (`derived_from`). Online, the run uses the
upstream ones as its inputs, so W&B's lineage view draws the chain; offline W&B cannot record
inputs (`use_artifact` needs its server), so there they are logged as the run's outputs with
the chain in their metadata. The run also holds every test query's answer as a Table.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, cast

from harness import live
from harness.record import OK, PREDICTIONS, RECORD, JobInfo, Prediction, Record, ServedLoad
from harness.report.columns import scalar_figures
from harness.report.config import LoggerConfig
from harness.report.pareto import ACCURACY, COSTS, frontier_memberships
from harness.report.records import points, read_predictions

log = logging.getLogger(__name__)


@contextmanager
def _run(logger: LoggerConfig, **init: Any) -> Iterator[Any]:
    """A W&B run that finishes even when logging into it fails, and whose failure is a warning."""
    if logger.name == "none":
        yield None
        return
    try:
        import wandb

        Path(logger.dir).mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=logger.project,
            entity=logger.entity,
            mode=cast(Literal["online", "offline", "disabled"], logger.mode),  # LoggerConfig checked it
            dir=logger.dir,
            # console capture would duplicate Hydra's job log; system stats would load the CPU
            # while a sweep measures on it.
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
            reinit="finish_previous",
            **{"tags": logger.tags, **init},
        )
    except Exception as exc:  # no network, bad key, broken install: the record is what matters
        log.warning("W&B: could not start a run (%s: %s); the record on disk is unaffected", type(exc).__name__, exc)
        yield None
        return
    exit_code = 0
    try:
        yield run
    except Exception as exc:
        exit_code = 1
        log.warning("W&B: logging failed (%s: %s); the record on disk is unaffected", type(exc).__name__, exc)
    finally:
        try:
            run.finish(exit_code=exit_code)
        except Exception as exc:
            log.warning("W&B: could not finish the run (%s: %s)", type(exc).__name__, exc)


def summary_metrics(record: Record) -> dict[str, Any]:
    """The record's scalar figures (the column spec's, units in their names) and the
    per-language and per-intent breakdowns, as W&B summary keys."""
    m = record.metrics
    out: dict[str, Any] = scalar_figures(record)
    out.update({f"accuracy/{lang}": v for lang, v in (m.accuracy.accuracy_by_language or {}).items()})
    out.update({f"f1/{label}": v for label, v in (m.accuracy.f1_by_intent or {}).items()})
    return out


def _confusion_plot(wandb: Any, confusion: dict[str, dict[str, int]]) -> Any:
    classes = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    index = {c: i for i, c in enumerate(classes)}
    y_true = [index[g] for g, row in confusion.items() for p, n in row.items() for _ in range(n)]
    preds = [index[p] for g, row in confusion.items() for p, n in row.items() for _ in range(n)]
    return wandb.plot.confusion_matrix(y_true=y_true, preds=preds, class_names=classes, title="confusion (test split)")


PREDICTION_COLUMNS = ("language", "intent", "predicted", "correct", "text", "raw_answer", "latency_ms", "error")


def _lineage(wandb: Any, run: Any, record: Record) -> Optional[str]:
    """The record's stages as artifacts, upstream first; the name of the last one."""
    upstream = None
    for link in record.lineage:
        name = f"{link.stage}-{link.key[:16]}"
        artifact = wandb.Artifact(name, type=link.stage, metadata={**link.to_json(), "derived_from": upstream})
        if Path(link.path).exists():
            artifact.add_reference(Path(link.path).as_uri(), checksum=False)
        if run.offline:
            run.log_artifact(artifact)
        else:
            run.use_artifact(artifact)
        upstream = name
    return upstream


def _predictions(wandb: Any, rows: list[Prediction]) -> Any:
    data = [[r.to_json().get(c) for c in PREDICTION_COLUMNS] for r in rows]
    return wandb.Table(columns=list(PREDICTION_COLUMNS), data=data)


# A served load's per-rate figures (harness.measure.load.rate_row), as W&B table columns.
SERVED_COLUMNS = (
    "mode",
    "offered_queries_per_s",
    "achieved_queries_per_s",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "goodput",
    "goodput_ci95_low",
    "goodput_ci95_high",
    "goodput_queries_per_s",
    "accuracy",
    "agreement",
    "saturated",
    "stop_reason",
)


def _served_rates(wandb: Any, served: ServedLoad) -> Any:
    rows = [
        {**r.to_json(), "goodput_ci95_low": r.goodput_ci95[0], "goodput_ci95_high": r.goodput_ci95[1]}
        for r in served.rates
    ]
    return wandb.Table(columns=list(SERVED_COLUMNS), data=[[r.get(c) for c in SERVED_COLUMNS] for r in rows])


class LiveRun:
    """The listener (`harness.live`) that puts a job's progress into its run as it happens:
    the training loss, learning rate and validation accuracy against `train/step`, and each
    stage's share done against the job's elapsed seconds (`progress/<stage>`), the stage
    running now in the summary."""

    def __init__(self, run: Any):
        self.run, self.started, self.trained = run, time.monotonic(), False
        run.define_metric("train/step")
        run.define_metric("train/*", step_metric="train/step")
        run.define_metric("progress/elapsed_s")
        run.define_metric("progress/*", step_metric="progress/elapsed_s")

    def __call__(self, event: dict[str, Any]) -> None:
        if "train/step" in event:
            self.trained = True
            self.run.log(event)
            return
        count = live.BarCount.of(event)
        if count is not None and count.total:
            stage = count.bar.split(" ")[0]
            self.run.log(
                {
                    f"progress/{stage}": count.n / count.total,
                    "progress/elapsed_s": round(time.monotonic() - self.started, 1),
                }
            )
            self.run.summary["stage"] = count.bar


@contextmanager
def job_run(
    logger: LoggerConfig, group: str, name: str, job: JobInfo, config: dict[str, Any]
) -> Iterator[Optional[LiveRun]]:
    """The job's run, started as the job starts, with its progress going to it live (None
    when there is no run: logger=none, or W&B could not start one)."""
    tags = [*logger.tags, *(t for t in (job.format, job.quant) if t)]
    with _run(logger, group=logger.group or group, job_type="evaluate", name=name, tags=tags, config=config) as run:
        live_run = LiveRun(run) if run is not None else None
        with live.listening(live_run):
            yield live_run


def log_job(record: Record, logger: LoggerConfig, group: str, name: str, live_run: Optional[LiveRun] = None) -> None:
    """The record into the job's run (`live_run`), or into a run of its own when the job had
    none (it failed before it started)."""
    if live_run is not None:
        try:
            _log_record(live_run.run, record, trained_live=live_run.trained)
        except Exception as exc:
            log.warning("W&B: logging failed (%s: %s); the record on disk is unaffected", type(exc).__name__, exc)
        return
    with job_run(logger, group, name, record.job, record.config) as live_run:
        if live_run is not None:
            _log_record(live_run.run, record, trained_live=False)


def _log_record(run: Any, record: Record, trained_live: bool) -> None:
    import wandb

    run.summary.update({"status": record.status, "stage": "done", **summary_metrics(record)})
    if record.status != OK:
        run.summary.update({"error": f"{record.error_type}: {record.error}"})
        return
    if not trained_live:  # a cached fine-tune: its curve from the record
        for step, loss in enumerate(record.train.loss if record.train else [], start=1):
            run.log({"train/step": step, "train/loss": loss})
    if record.metrics.accuracy.confusion:
        run.log({"confusion_matrix": _confusion_plot(wandb, record.metrics.accuracy.confusion)})
    answers = read_predictions(record)
    if answers is not None:
        run.log({"predictions": _predictions(wandb, answers)})
    if record.served:
        served = record.served
        run.log({"served_load": _served_rates(wandb, served)})
        run.summary.update(
            {
                "served/capacity_queries_per_s": served.capacity_queries_per_s,
                "served/capacity_fidelity": served.capacity_fidelity,
                "served/server_peak_rss_mib": served.server_peak_rss_mib,
                "served/slots": served.slots,
            }
        )
    upstream = _lineage(wandb, run, record)
    artifact = wandb.Artifact(
        f"record-{(record.keys.record or '')[:16]}",
        type="record",
        metadata={**record.job.to_json(), "derived_from": upstream},
    )
    files = [Path(record.record_dir) / name for name in (RECORD, PREDICTIONS)] if record.record_dir else []
    for file in files:
        if file.is_file():
            artifact.add_file(str(file))
    run.log_artifact(artifact)


def log_sweep(records: list[Record], report_dir: Path, logger: LoggerConfig, group: str) -> None:
    """The sweep's summary run: every job in one table, and accuracy-vs-cost scatter plots."""
    ok = [r for r in records if r.status == OK]
    with _run(logger, group=logger.group or group, job_type="sweep-summary", name=f"summary {group}") as run:
        if run is None or not ok:
            return
        import wandb

        compared = points(ok)
        columns: list[str | int] = [*compared[0].flat(), "pareto_frontiers"]
        table = wandb.Table(
            columns=columns,
            data=[[*p.flat().values(), " ".join(on)] for p, on in zip(compared, frontier_memberships(compared))],
        )
        plots = {
            f"pareto/accuracy_vs_{cost.name}": wandb.plot.scatter(
                table, cost.name, ACCURACY.name, title=f"accuracy vs {cost.label}"
            )
            for cost in COSTS
            if any(p.value(cost.name) is not None for p in compared)
        }
        images = {f"report/{png.stem}": wandb.Image(str(png)) for png in sorted(report_dir.glob("*.png"))}
        run.log({"jobs": table, **plots, **images})
        run.summary.update({"jobs_ok": len(ok), "jobs_failed": len(records) - len(ok)})
