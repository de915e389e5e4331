"""Live progress out of a stage's process: events reach the job's listener while the stage
still runs, not when it ends."""

from __future__ import annotations

import time
from pathlib import Path

from harness import live
from harness.isolated import run_isolated


def emit_then_wait_for_an_answer(answer: str, wait_s: float) -> str:
    """In the stage's process: announce itself, then wait for the job's side to have seen it."""
    live.emit({"bar": "fine-tune (full, fp32)", "n": 1, "total": 2})
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if Path(answer).exists():
            return "seen while running"
        time.sleep(0.1)
    return "not seen while running"


def test_a_stages_events_reach_the_listener_while_it_runs(tmp_path):
    answer = tmp_path / "seen"
    seen: list[dict] = []

    def listener(event: dict) -> None:
        seen.append(event)
        answer.touch()

    with live.listening(listener):
        result = run_isolated(
            "probe", emit_then_wait_for_an_answer, {"answer": str(answer), "wait_s": 60}, tmp_path, 120, "t", "cpu"
        )
    assert result == "seen while running"
    assert seen == [{"bar": "fine-tune (full, fp32)", "n": 1, "total": 2}]


def test_without_a_listener_events_go_nowhere(tmp_path, monkeypatch):
    monkeypatch.delenv(live.ENV, raising=False)
    result = run_isolated(
        "probe",
        emit_then_wait_for_an_answer,
        {"answer": str(tmp_path / "never"), "wait_s": 2},
        tmp_path,
        120,
        "t",
        "cpu",
    )
    assert result == "not seen while running"
    assert not (tmp_path / "probe_progress.jsonl").exists()
