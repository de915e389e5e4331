"""Pareto frontiers on hand-made cases, record collection, and the written report rendered in a
real headless browser."""

import json
import shutil
import subprocess
import sys

import pytest

from harness.record import Record
from harness.report import results
from harness.report.config import ReportConfig
from harness.report.pareto import (
    ACCURACY,
    ENERGY,
    MEMORY,
    SPEED,
    baseline_index,
    frontier,
    frontier_memberships,
    versus,
)
from harness.report.records import Point, collect
from harness.report.write import write_report


def pts(*rows, **names):
    keys = ("accuracy", "decode_tokens_per_s", "peak_memory_mib", "energy_j_per_query")
    return [Point("v", figures=dict(zip(keys, r)), **names) for r in rows]


def test_frontier_of_one_point_is_that_point():
    assert frontier(pts((0.5, 10, 100, None)), [ACCURACY, SPEED]) == [0]


def test_dominated_points_leave_the_frontier_and_trade_offs_stay():
    points = pts((0.9, 10, 0, 0), (0.8, 20, 0, 0), (0.7, 5, 0, 0), (0.8, 10, 0, 0))
    # (0.7, 5) and (0.8, 10) are beaten on both; (0.9, 10) and (0.8, 20) trade accuracy for speed
    assert frontier(points, [ACCURACY, SPEED]) == [0, 1]


def test_all_but_one_dominated():
    points = pts((0.9, 30, 0, 0), (0.8, 20, 0, 0), (0.7, 10, 0, 0))
    assert frontier(points, [ACCURACY, SPEED]) == [0]


def test_ties_keep_both_points_and_minimised_costs_count_lower_as_better():
    points = pts((0.9, 10, 100, 0), (0.9, 10, 100, 0), (0.9, 10, 150, 0))
    assert frontier(points, [ACCURACY, SPEED]) == [0, 1, 2]  # equal on these two: nobody dominates
    assert frontier(points, [ACCURACY, MEMORY]) == [0, 1]  # more memory for the same accuracy loses


def test_unmeasured_energy_is_never_on_its_frontier_nor_in_the_overall_one():
    points = pts((0.9, 10, 100, None), (0.8, 20, 50, 2.0), (0.85, 15, 60, None))
    assert frontier(points, [ACCURACY, ENERGY]) == [1]
    on = frontier_memberships(points)
    # energy is missing for some points, so 'all' weighs accuracy, speed and memory (latency is
    # absent from these points)
    assert "all" in on[0] and "all" in on[1] and "all" in on[2]
    assert "energy" in on[1] and "energy" not in on[0]


def test_frontiers_compare_only_points_of_the_same_hardware():
    points = [
        *pts((0.9, 10, 100, None), (0.8, 5, 200, None), hardware="cpu"),
        *pts((0.95, 500, 50, None), hardware="cuda"),
    ]
    on = frontier_memberships(points)
    # the GPU point beats both CPU points on everything, yet only competes with GPU points
    assert "all" in on[0] and "all" in on[2] and on[1] == []


def test_baseline_is_the_largest_artifact_and_ratios_read_like_the_study():
    points = [
        Point(
            "fp16",
            figures={
                "size_mib": 540,
                "accuracy": 0.90,
                "decode_tokens_per_s": 20.0,
                "peak_memory_mib": 1000,
                "latency_p50_ms": 400,
            },
        ),
        Point(
            "q4",
            figures={
                "size_mib": 100,
                "accuracy": 0.88,
                "decode_tokens_per_s": 172.0,
                "peak_memory_mib": 180,
                "latency_p50_ms": 100,
            },
        ),
    ]
    assert baseline_index(points) == 0
    assert versus(points[1], points[0]) == (
        "8.6x decode tok/s, -75% latency p50, -82% peak memory, -81% size, -2.0 pt accuracy"
    )


def _record(quant, size, acc, tg, rss, key, status="ok"):
    if status != "ok":
        return Record.from_json(
            dict(
                status="failed",
                error_type="RuntimeError",
                error="boom\nmore",
                job={"quant": quant, "model": "m", "train": "lora", "hardware": "cpu"},
            )
        )
    return Record.from_json(
        {
            "status": "ok",
            "job": {"model": "m", "quant": quant, "format": quant.split("_")[0], "train": "lora", "hardware": "cpu"},
            "artifact": {"size_mib": size, "bits_per_weight": size / 10},
            "metrics": {
                "accuracy": acc,
                "accuracy_ci95": [acc - 0.05, acc + 0.05],
                "macro_f1": acc,
                "invalid_rate": 0.0,
                "decode_tokens_per_s": tg,
                "prefill_tokens_per_s": 10 * tg,
                "latency_p50_ms": 1000 / tg,
                "peak_rss_mib": rss,
                "energy_j_per_query": None,
                "energy_unmeasured_reason": "no RAPL here",
                "energy_estimate_j_per_query": 0.5,
                "energy_estimate_method": "cpu_time_x_10W_per_core",
            },
            "config": {"hardware": {"device": "cpu"}},
            "keys": {"record": key},
        }
    )


def _write(path, record):
    path.mkdir(parents=True)
    (path / "record.json").write_text(json.dumps(record.to_json()))


def test_collect_counts_each_measurement_once_and_drops_failures_since_fixed(tmp_path):
    _write(tmp_path / "a/0_fp32", _record("fp32", 540, 0.9, 20, 1000, "k1"))
    _write(tmp_path / "b/0_fp32", _record("fp32", 540, 0.9, 20, 1000, "k1"))  # a re-run that reused it
    _write(tmp_path / "a/1_gptq4", _record("gptq4", 0, 0, 0, 0, "", status="failed"))
    _write(tmp_path / "b/1_gptq4", _record("gptq4", 100, 0.9, 30, 300, "k2"))  # fixed later
    _write(tmp_path / "b/2_bnb", _record("bnb_nf4", 0, 0, 0, 0, "", status="failed"))
    records = collect([tmp_path])
    assert sorted(r.job.quant for r in records) == ["bnb_nf4", "fp32", "gptq4"]
    assert [r.status for r in records if r.job.quant == "gptq4"] == ["ok"]


def test_records_of_older_measurement_versions_are_collected_and_reported(tmp_path):
    """A record from before each stage's key, the machine and the load curve were kept, copied
    into the two job directories that reused its cache entry: one measurement, reported."""
    old = {
        "status": "ok",
        "job": {"model": "m", "quant": "gguf_q8_0", "train": "lora", "hardware": "cpu"},
        "artifact": {"size_mib": 145},
        "metrics": {"accuracy": 0.89, "accuracy_ci95": [0.84, 0.94], "decode_tokens_per_s": 160.0},
        "config": {"hardware": {"device": "cpu"}},
        "measure_version": 1,
        "record_dir": str(tmp_path / "cache" / "records" / "0123456789abcdef"),
    }
    for job_dir in (tmp_path / "a" / "0_gguf_q8_0", tmp_path / "b" / "0_gguf_q8_0"):
        job_dir.mkdir(parents=True)
        (job_dir / "record.json").write_text(json.dumps(old))
    _write(tmp_path / "b" / "1_fp32", _record("fp32", 540, 0.9, 20, 1000, "k1"))
    records = collect([tmp_path])
    assert sorted(r.job.quant for r in records) == ["fp32", "gguf_q8_0"]
    md = (write_report(records, tmp_path / "report", title="old and new") / "report.md").read_text()
    assert "| gguf_q8_0 |" in md and "| fp32 |" in md
    rows = results.rows_from_records(records, "make run", ReportConfig())
    assert [(r["variant"], r["runtime"]) for r in rows] == [("gguf_q8_0", "not kept"), ("fp32", "not kept")]


@pytest.fixture
def report_dir(tmp_path):
    records = [
        _record("fp32", 540, 0.90, 20.0, 1000, "k1"),
        _record("gguf_q8_0", 145, 0.89, 160.0, 560, "k2"),
        _record("gguf_q4km", 100, 0.88, 172.0, 530, "k3"),
        _record("gguf_q3km", 95, 0.70, 150.0, 540, "k4"),
        _record("gptq4", 0, 0, 0, 0, "", status="failed"),
    ]
    return write_report(records, tmp_path / "report", title="test sweep")


def test_report_files_name_the_frontier_the_baseline_and_the_unmeasured_energy(report_dir):
    md = (report_dir / "report.md").read_text()
    main_table = md.split("### Against the baseline")[0]  # the decision table below names the variants again
    rows = {line.split(" | ")[0].strip("| "): line for line in main_table.splitlines() if line.startswith("| ")}
    assert "baseline" in rows["fp32"]
    assert "8.6x decode tok/s" in rows["gguf_q4km"] and "-81% size" in rows["gguf_q4km"]
    assert "all" in rows["gguf_q4km"] and "| -" in rows["gguf_q3km"]  # q3km is beaten on everything
    assert "Energy was not measured on this hardware (no RAPL here)" in md and "cpu_time_x_10W_per_core" in md
    assert "gptq4: RuntimeError: boom" in md
    csv_lines = (report_dir / "report.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and "pareto_frontiers" in csv_lines[0]
    # energy unmeasured everywhere: no energy plot, one plot per other cost
    assert sorted(p.name for p in report_dir.glob("*.png")) == [
        "cpu_accuracy_vs_decode_tokens_per_s.png",
        "cpu_accuracy_vs_latency_p50_ms.png",
        "cpu_accuracy_vs_peak_memory_mib.png",
    ]
    html = (report_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "src='http" not in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_report_renders_its_plots_in_headless_chromium(report_dir, tmp_path):
    import matplotlib.image

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1400,1800",
            (report_dir / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = matplotlib.image.imread(shot)[..., :3]
    # the frontier points and line are tab:red (214, 39, 40), the others tab:blue: only the
    # plots paint those colours, so finding both means the inlined images decoded and drew
    red = ((abs(pixels[..., 0] - 214 / 255) < 0.08) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)).sum()
    blue = ((pixels[..., 0] < 0.2) & (abs(pixels[..., 1] - 119 / 255) < 0.08) & (pixels[..., 2] > 0.6)).sum()
    assert red > 200 and blue > 50, (red, blue)


def test_report_command_reads_a_directory_and_fails_clearly_without_records(report_dir, tmp_path):
    _write(tmp_path / "runs/0_fp32", _record("fp32", 540, 0.9, 20, 1000, "k1"))
    done = subprocess.run(
        [sys.executable, "-m", "harness.report", str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "fp32" in done.stdout and (tmp_path / "out/report.html").is_file()
    empty = subprocess.run(
        [sys.executable, "-m", "harness.report", str(tmp_path / "out")], capture_output=True, text=True
    )
    assert empty.returncode == 2 and "no record.json" in empty.stderr and "make run" in empty.stderr


def test_differences_inside_the_noise_are_marked_and_never_dominate():
    def p(acc, acc_ci, tg, tg_ci):
        figures = {
            "accuracy": acc,
            "accuracy_ci95_low": acc_ci[0],
            "accuracy_ci95_high": acc_ci[1],
            "decode_tokens_per_s": tg,
            "decode_tokens_per_s_ci95_low": tg_ci[0],
            "decode_tokens_per_s_ci95_high": tg_ci[1],
            "peak_memory_mib": 100,
            "size_mib": 100,
        }
        return Point("v", figures=figures)

    base = p(0.63, (0.59, 0.67), 90.0, (85.0, 95.0))
    close = p(0.62, (0.58, 0.66), 98.0, (93.0, 103.0))  # better speed, worse accuracy: all inside the noise
    far = p(0.50, (0.46, 0.54), 60.0, (58.0, 62.0))
    # without intervals `base` and `close` would trade off; with them neither beats the other
    assert frontier([base, close], [ACCURACY, SPEED]) == [0, 1]
    closer = Point("w", figures={**close.figures, "accuracy": 0.625})
    assert frontier([close, closer], [ACCURACY, SPEED]) == [0, 1]  # overlapping: both stay
    assert frontier([base, far], [ACCURACY, SPEED]) == [0]  # beyond the noise: dominated
    assert versus(close, base) == "~1.1x decode tok/s, +0% peak memory, +0% size, ~-1.0 pt accuracy"
    assert versus(far, base) == "0.7x decode tok/s, +0% peak memory, +0% size, -13.0 pt accuracy"
