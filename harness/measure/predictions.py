"""The test queries a measurement answers and the file its answers go to: shared by the local
measurement (measure/run.py), the hosted one (measure/hosted.py) and the targets that render
the prompts before either runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from harness.data.dataset import read_split, spread
from harness.measure.config import MeasureConfig
from harness.record import PREDICTIONS


def test_rows(data_dir: Path, cfg: MeasureConfig) -> list[dict]:
    rows = read_split(data_dir, "test")
    # the split is ordered by intent and language: a cut would be a few cells, a spread is all
    return spread(rows, cfg.max_eval_samples) if cfg.max_eval_samples else rows


def write_predictions(
    out_dir: Path,
    rows: list[dict],
    raw: list[str],
    predicted: list,
    latencies_ms: list[Optional[float]],
    errors: Optional[list[Optional[str]]] = None,
) -> None:
    """Every test query with the model's raw answer and its parse, for auditing (latency
    where the query was in the batch-1 pass; the error where a request failed)."""
    with open(out_dir / PREDICTIONS, "w", encoding="utf-8") as f:
        for i, (row, text, p, ms) in enumerate(zip(rows, raw, predicted, latencies_ms)):
            error = {"error": errors[i]} if errors and errors[i] else {}
            f.write(
                json.dumps(
                    {
                        **row,
                        "raw_answer": text,
                        "predicted": p,
                        "correct": p == row["intent"],
                        "latency_ms": ms,
                        **error,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
