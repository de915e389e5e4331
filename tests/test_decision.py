"""Decision-grade comparison on cases with known answers: the exact McNemar p and the paired
bootstrap interval against independent computations, a worse variant that fails the gate, a
noise-only difference reported indistinguishable, and serving cost worked out by hand."""

from __future__ import annotations

import json
import math
import random

import pytest

from harness.errors import ConfigError
from harness.record import LoadLevel, Prediction
from harness.report import decision
from harness.report.__main__ import main as report_main
from harness.report.compare import (
    BETTER,
    FAIL,
    INCONCLUSIVE,
    PASS,
    SAME,
    WORSE,
    compare,
    gate,
    mcnemar_exact_p,
    paired,
    paired_bootstrap,
)
from harness.report.decision import HEADERS, caption, cells, served_markdown, serving_figures
from harness.report.serving import bandwidth_share, break_even_queries_per_month, capacity_at, usd_per_million_queries


def test_exact_mcnemar_p_worked_by_hand():
    # 5 flips all one way: 2 * (1/2)^5; one against four: 2 * (1 + 5) / 2^5
    assert mcnemar_exact_p(0, 5) == 0.0625 and mcnemar_exact_p(4, 1) == 0.375
    # no flips, an even split and a lone flip: nothing uneven, p = 1
    assert mcnemar_exact_p(0, 0) == mcnemar_exact_p(7, 7) == mcnemar_exact_p(1, 0) == 1.0
    assert round(mcnemar_exact_p(143, 103), 3) == 0.013  # the two-epoch comparison in docs/findings.md


def test_exact_mcnemar_p_is_the_two_sided_binomial_test_of_the_flips():
    scipy_stats = pytest.importorskip("scipy.stats")
    for fixed, broken in ((143, 103), (45, 22), (0, 5), (7, 7), (1, 0)):
        assert mcnemar_exact_p(fixed, broken) == pytest.approx(
            scipy_stats.binomtest(fixed, fixed + broken, 0.5).pvalue, rel=1e-9
        )


def test_with_one_query_per_cluster_the_bootstrap_interval_is_the_paired_normal_one():
    """Independent queries: the bootstrap's interval matches the textbook paired-difference
    interval, diff +- 1.96 sqrt((b + c)/n - diff^2) / sqrt(n)."""
    rng = random.Random(1)
    n, fixed, broken = 4000, 300, 200
    outcomes = [(False, True)] * fixed + [(True, False)] * broken + [(True, True)] * 3000 + [(False, False)] * 500
    rng.shuffle(outcomes)
    base, var = [b for b, _ in outcomes], [v for _, v in outcomes]
    (low, high), _ = paired_bootstrap(base, var, [str(i) for i in range(n)])
    diff = (fixed - broken) / n
    half = 1.959964 * math.sqrt(((fixed + broken) / n - diff**2) / n)
    assert low == pytest.approx(diff - half, abs=0.003) and high == pytest.approx(diff + half, abs=0.003)


def test_clusters_that_fail_together_widen_the_interval():
    """Ten queries per phrasing, flipping together: the effective sample is the phrasings."""
    base, var, clusters = [], [], []
    for c in range(200):
        b, v = (False, True) if c < 15 else (True, False) if c < 25 else (True, True)
        base += [b] * 10
        var += [v] * 10
        clusters += [f"p{c}"] * 10
    (low, high), _ = paired_bootstrap(base, var, clusters)
    (q_low, q_high), _ = paired_bootstrap(base, var, [str(i) for i in range(len(base))])
    assert (high - low) > 2.5 * (q_high - q_low)


def _rows(correct: list[bool], languages: list[str], split: str = "query") -> list[dict]:
    """Predictions of a test split whose query texts are `split` and a number."""
    return [
        {"text": f"{split} {i}", "template_id": f"{lang}.intent.{i // 2}", "language": lang, "correct": ok}
        for i, (ok, lang) in enumerate(zip(correct, languages))
    ]


def _predictions(rows: list[dict]) -> list[Prediction]:
    return [Prediction.from_json(r) for r in rows]


def test_the_gate_passes_noise_and_fails_a_worse_variant_and_names_the_language_hurt_most():
    rng = random.Random(0)
    languages = ["de", "en", "hr"] * 400
    base = [rng.random() < 0.8 for _ in languages]
    noise = list(base)
    right, wrong = [i for i, ok in enumerate(base) if ok], [i for i, ok in enumerate(base) if not ok]
    for i in rng.sample(right, 10) + rng.sample(wrong, 10):  # ten broken, ten fixed, at random
        noise[i] = not noise[i]
    same = compare(_predictions(_rows(base, languages)), _predictions(_rows(noise, languages)), 0.95)
    assert same.overall.verdict == SAME and same.gate == PASS
    worse = list(base)
    for i, lang in enumerate(languages):
        if lang == "hr" and worse[i] and rng.random() < 0.3:  # Croatian loses about 30% of its right answers
            worse[i] = False
    hurt = compare(_predictions(_rows(base, languages)), _predictions(_rows(worse, languages)), 0.99)
    assert hurt.overall.verdict == WORSE and hurt.gate == FAIL
    assert hurt.languages_with(FAIL) == ["hr"] and hurt.hurt_most == "hr"
    assert hurt.by_language["en"].fixed == hurt.by_language["en"].broken == 0
    assert paired([False] * 50 + [True] * 50, [True] * 100, [str(i) for i in range(100)]).verdict == BETTER


def _one_per_cluster(wrong: int, n: int = 100, language: str = "en") -> list[Prediction]:
    """n queries in one language, of their own phrasing each, the first `wrong` answered wrong."""
    return [
        Prediction(text=f"{language} q{i}", template_id=f"{language} t{i}", language=language, correct=i >= wrong)
        for i in range(n)
    ]


def test_the_gate_has_three_outcomes_and_a_resolvable_margin_worked_by_hand():
    """The baseline answers all 100 queries right, so a bootstrap draw's relative accuracy is
    1 - (draws of the variant's wrong queries) / 100. One wrong query is drawn X ~ Bin(100, 0.01)
    times: P(X >= 4) = 0.018 and P(X >= 3) = 0.079, so the 2.5% bound is 0.97, and P(X = 0) =
    0.366 makes the 97.5% bound 1.0. Ten wrong: X ~ Bin(100, 0.1), P(X <= 2) = 0.002, so the
    97.5% bound is below 0.98."""
    assert (gate((0.97, 1.0), 0.98), gate((0.90, 0.95), 0.98), gate((0.98, 1.01), 0.98)) == (INCONCLUSIVE, FAIL, PASS)
    base = _one_per_cluster(0)
    one_wrong = compare(base, _one_per_cluster(1), 0.98)
    # its point estimate, 0.99, clears the margin; its lower bound does not; it was not shown worse
    assert one_wrong.overall.relative_ci95 == (0.97, 1.0) and one_wrong.gate == INCONCLUSIVE
    assert one_wrong.languages_with(INCONCLUSIVE) == ["en"] and one_wrong.languages_with(FAIL) == []
    # half of 1.0 - 0.97: a gate at 0.98 (margin 0.02) is narrower than this split resolves
    assert one_wrong.resolvable_margins == {"en": pytest.approx(0.015)}
    assert compare(base, _one_per_cluster(1), 0.96).gate == PASS
    ten_wrong = compare(base, _one_per_cluster(10), 0.98)
    assert ten_wrong.overall.relative_ci95[1] < 0.98 and ten_wrong.gate == FAIL
    assert compare(base, _one_per_cluster(0), 0.99).gate == PASS  # the same answers: (1.0, 1.0)

    # no table says 'fail' for the variant that was not shown worse
    rows = [
        {
            "variant": name,
            "verdict": c.overall.verdict,
            "fixed": c.overall.fixed,
            "broken": c.overall.broken,
            "accuracy_difference": c.overall.difference,
            "accuracy_difference_ci95_low": c.overall.difference_ci95[0],
            "accuracy_difference_ci95_high": c.overall.difference_ci95[1],
            "mcnemar_p": c.overall.mcnemar_p,
            "relative_accuracy_ci95_low": c.overall.relative_ci95[0],
            "relative_accuracy_ci95_high": c.overall.relative_ci95[1],
            **decision.gate_figures(c),
        }
        for name, c in (("q8", one_wrong), ("q2", ten_wrong))
    ]
    q8, q2 = (decision.cells(r) for r in rows)
    assert q8[5:9] == ["inconclusive", "0.970 to 1.000", "inconclusive: en", "0.015 (en)"]
    assert q2[5] == "fail" and q2[7] == "worse: en"
    # a row kept when the gate had two outcomes: its 'fail' is only "did not pass"
    kept = {
        "variant": "q8",
        "verdict": SAME,
        "gate": "fail",
        "gate_failing_languages": "de es",
        "relative_accuracy_ci95_low": 0.993,
    }
    assert decision.gate_cells(decision.Decision.from_json(kept)) == [
        "not passed",
        "from 0.993",
        "not passed: de es",
        "",
    ]


def test_a_variant_that_passes_overall_fails_where_one_language_is_shown_worse():
    """900 English queries right in both, 100 Croatian ones of which the variant gets 30 wrong.
    Croatian alone: a draw holds X ~ Bin(100, 0.3) of the wrong ones, P(X <= 21) = 0.026, so the
    97.5% bound of 1 - X/100 is 0.79, below 0.9. Overall: X ~ Bin(1000, 0.03), P(X >= 41) = 0.028,
    so the 2.5% bound of 1 - X/1000 is about 0.96, above 0.9."""
    base = _one_per_cluster(0, 900, "en") + _one_per_cluster(0, 100, "hr")
    variant = _one_per_cluster(0, 900, "en") + _one_per_cluster(30, 100, "hr")
    c = compare(base, variant, 0.9)
    assert c.overall.relative_ci95[0] > 0.95 and c.overall.gate(0.9) == PASS
    assert c.by_language["hr"].relative_ci95[1] < 0.8 and c.by_language["en"].relative_ci95 == (1.0, 1.0)
    assert c.outcomes == {"en": PASS, "hr": FAIL} and c.hurt_most == "hr"
    assert c.gate == FAIL


def test_a_baseline_with_nothing_right_is_matched_by_nothing_right_and_beaten_by_anything():
    nothing = _one_per_cluster(100)
    # every draw is 0 right of 0: as good as the baseline
    same = compare(nothing, nothing, 0.99)
    assert same.overall.relative_ci95 == (1.0, 1.0) and same.gate == PASS and same.overall.verdict == SAME
    # ten right: a draw holding any of them is infinitely better; one holding none (0.9^100, 3e-5) is rare
    ten_right = compare(nothing, _one_per_cluster(90), 0.99)
    assert ten_right.overall.relative_ci95 == (math.inf, math.inf) and ten_right.gate == PASS
    assert ten_right.overall.verdict == BETTER and ten_right.overall.mcnemar_p == 2 / 2**10


def test_serving_cost_worked_by_hand():
    curve = [
        LoadLevel(concurrency=1, queries_per_s=4.0, latency_p50_ms=240, latency_p95_ms=300),
        LoadLevel(concurrency=4, queries_per_s=9.0, latency_p50_ms=420, latency_p95_ms=800),
        LoadLevel(concurrency=16, queries_per_s=12.0, latency_p50_ms=1300, latency_p95_ms=1600),
    ]
    assert capacity_at(curve, 1000).concurrency == 4 and capacity_at(curve, 2000).concurrency == 16
    assert capacity_at(curve, 100) is None
    # $0.10 an hour at 9 queries a second: 32,400 queries an hour, $0.10 / 0.0324 M = $3.0864 per million
    assert usd_per_million_queries(0.10, 9.0) == pytest.approx(3.0864, abs=1e-4)
    # $73 a month against $0.0002 a query: 365,000 queries a month
    assert break_even_queries_per_month(0.10, 0.0002) == pytest.approx(365_000)
    # 101 MiB = 105,906,176 bytes read once per token, at 90 tok/s: 9.5316 GB/s of 20 GB/s, 47.66%
    # (101 MB would be 45.45%; counting each byte read and written, 95.3%)
    assert bandwidth_share(101, 90, 20) == pytest.approx(0.4766, abs=1e-4)


def test_a_level_whose_p95_was_not_measured_is_no_capacity():
    curve = [
        LoadLevel(concurrency=1, queries_per_s=4.0, latency_p50_ms=240, latency_p95_ms=300),
        LoadLevel(concurrency=4, queries_per_s=9.0),
    ]
    assert capacity_at(curve, 1000).concurrency == 1
    assert capacity_at(curve[1:], 1000) is None


def test_without_a_latency_objective_a_row_has_no_capacity_or_cost_but_its_bandwidth_share():
    from harness.record import Record

    record = Record.from_json(dict(
        job={},
        metrics={"load_curve": [{"concurrency": 1, "queries_per_s": 4.0, "latency_p95_ms": 300}],
                 "model_mib": 101, "decode_tokens_per_s": 90},
        config={"hardware": {"usd_per_hour": 0.10}, "measure": {}},
        bandwidth={"gb_per_s": 20.0},
    ))  # fmt: skip
    row = serving_figures(record)
    assert row["slo_p95_ms"] is None and row["capacity_queries_per_s"] is None
    assert row["capacity_concurrency"] is None and row["usd_per_million_queries"] is None
    assert row["bandwidth_share"] == pytest.approx(0.4766, abs=1e-4)  # worked in test_serving_cost_worked_by_hand


def _record(
    tmp_path, name: str, correct: list[bool], languages: list[str], size: float, qps: float, split="query", **metrics
) -> None:
    job_dir = tmp_path / "sweep" / f"0_{name}"
    accuracy = sum(correct) / len(correct)
    job_dir.mkdir(parents=True)
    with open(job_dir / "predictions.jsonl", "w") as f:
        for row in _rows(correct, languages, split):
            f.write(json.dumps(row) + "\n")
    record = {
        "status": "ok",
        "record_dir": str(job_dir),
        "job": {"model": "m", "quant": name, "format": name, "train": "full", "hardware": "cpu"},
        "artifact": {"size_mib": size},
        "metrics": {
            "accuracy": accuracy,
            "accuracy_ci95": [accuracy - 0.03, accuracy + 0.03],
            "decode_tokens_per_s": 90.0,
            "model_mib": size,
            "peak_rss_mib": 200.0,
            "load_curve": [{"concurrency": 1, "queries_per_s": qps, "latency_p50_ms": 200, "latency_p95_ms": 300}],
            **metrics,
        },
        "config": {"hardware": {"device": "cpu", "usd_per_hour": 0.10}, "measure": {"slo_p95_ms": 1000}},
        "keys": {"record": name, "dataset": "d"},
        "bandwidth": {"gb_per_s": 20.0, "method": "numpy copy"},
    }
    (job_dir / "record.json").write_text(json.dumps(record))


def test_the_report_shows_flips_verdict_gate_capacity_cost_and_bandwidth(tmp_path):
    rng = random.Random(3)
    languages = ["de", "en"] * 300
    base = [rng.random() < 0.85 for _ in languages]
    worse = [ok and (lang == "en" or rng.random() < 0.6) for ok, lang in zip(base, languages)]
    _record(tmp_path, "fp32", base, languages, 513, 4.0)
    _record(tmp_path, "gguf_q4km", worse, languages, 101, 9.0)
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| gguf_q4km |") and "worse" in line)
    flips = sum(b and not w for b, w in zip(base, worse))
    assert f"| 0 / {flips} |" in row and "| fail |" in row and "| worse: de |" in row and "| de |" in row
    # $0.10 / (9 q/s * 3600 s) per query: $3.09 per million; 101 MiB * 90 tok/s of 20 GB/s: 47.66%
    assert "| 9.0 (1 at a time) | 3.09 | 48% |" in row
    assert "Against fp32" in md and "$0.1 per machine-hour" in md


def test_the_report_compares_with_the_baseline_it_is_told_and_refuses_one_it_does_not_have(tmp_path):
    languages = ["de", "en"] * 50
    _record(tmp_path, "fp32", [True] * 100, languages, 513, 4.0)
    _record(tmp_path, "gguf_q4km", [i % 10 != 0 for i in range(100)], languages, 101, 9.0)
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report"), "--baseline", "gguf_q4km"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    # fp32, the largest and otherwise the baseline, fixed the ten queries gguf_q4km got wrong: p = 2 / 2^10
    assert "Against gguf_q4km" in md and "| fp32 | 10 / 0 | 0.002 |" in md
    with pytest.raises(ConfigError, match="report.baseline='q2' is not among this report's variants: fp32, gguf_q4km"):
        report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report"), "--baseline", "q2"])


def test_a_variant_measured_on_another_test_split_is_not_compared(tmp_path):
    languages = ["de", "en"] * 50
    _record(tmp_path, "fp32", [True] * 100, languages, 513, 4.0)
    # as many queries, other texts: paired one by one they would compare unlike queries
    _record(tmp_path, "gguf_q4km", [True] * 100, languages, 101, 9.0, split="another query")
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| gguf_q4km |  |  |  | not comparable (another test split) |" in md


def test_the_report_names_the_volume_at_which_a_machine_breaks_even_with_a_hosted_model(tmp_path):
    languages = ["de", "en"] * 50
    answers = [True] * len(languages)
    _record(tmp_path, "fp32", answers, languages, 513, 4.0)
    _record(tmp_path, "gpt41", answers, languages, 0, 2.0, cost_usd_per_query=0.0002)
    _record(tmp_path, "other_api", answers, languages, 0, 2.0, cost_usd_per_query=0.0001)
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    # $0.10 an hour for 730 hours, at $0.0002 a query: 365,000 queries a month
    assert "fp32 against gpt41 above 365,000 queries" in md
    # a hosted model priced per query is no machine rented by the hour: it breaks even with nothing
    assert "other_api against gpt41" not in md and "gpt41 against other_api" not in md


def test_a_served_capacity_prices_the_row_with_the_in_process_one_beside_it():
    from harness.record import Record, ServedLoad

    rates = [
        {"mode": "synchronous", "offered_queries_per_s": None, "achieved_queries_per_s": 4.0, "latency_p95_ms": 300,
         "saturated": False, "goodput": 1.0, "accuracy": 0.9, "agreement": 1.0},
        {"mode": "poisson", "offered_queries_per_s": 6.0, "achieved_queries_per_s": 6.0, "latency_p95_ms": 700,
         "saturated": False, "goodput": 0.98, "accuracy": 0.88, "agreement": 0.97},
        {"mode": "poisson", "offered_queries_per_s": 8.0, "achieved_queries_per_s": 7.1, "latency_p95_ms": 2400,
         "saturated": True, "goodput": 0.4, "accuracy": 0.85, "agreement": 0.95},
    ]  # fmt: skip
    served = ServedLoad(
        slots=4, server="version: 1 (x)", server_peak_rss_mib=300.0, slo_p95_ms=1000, capacity_queries_per_s=6.0,
        capacity_interval_queries_per_s=[6.0, 8.0], in_process_capacity_queries_per_s=9.0, capacity_fidelity=6 / 9,
        requests_per_rate=60, warmup_requests=4, seed=0, rates=rates,
    )  # fmt: skip
    record = Record.from_json(
        dict(
            job={},
            metrics={"load_curve": [{"concurrency": 4, "queries_per_s": 9.0, "latency_p95_ms": 800}]},
            config={"hardware": {"usd_per_hour": 0.10}, "measure": {"slo_p95_ms": 1000}},
            served=served.to_json(),
        )
    )
    from harness.report.records import point

    # a served CPU row's memory is its server's
    assert (point(record, []).value("peak_memory_mib"), point(record, []).memory_kind) == (300.0, "server RSS")
    row = {**serving_figures(record), "variant": "q4", "baseline": "q4", "min_relative_accuracy": 0.99}
    # $0.10 an hour at 6 queries a second: 21,600 queries an hour, $4.63 per million
    assert row["capacity_queries_per_s"] == 6.0 and row["capacity_source"] == "served"
    assert row["usd_per_million_queries"] == pytest.approx(4.6296, abs=1e-4)
    assert row["in_process_capacity_queries_per_s"] == 9.0 and row["capacity_fidelity"] == pytest.approx(2 / 3)
    assert row["served_accuracy_at_capacity"] == 0.88 and row["served_agreement_min"] == 0.95
    assert cells(row)[HEADERS.index("capacity q/s (at)")] == "6.0 served (6.0-8.0), in-process 9.0 (4 at a time)"
    assert "open-loop Poisson load on llama.cpp's server" in caption([row])
    served_row = "| q4 | 6.00 (6.00-8.00) | 9.00 | 0.67 | 0.98 | 0.880 (0.850) | 0.970 (0.950) | 300 |"
    assert served_row + " 4.00:1.00 6.00:0.98 7.10:0.40* |" in served_markdown([row])


def test_hosted_models_alone_have_no_baseline_until_one_is_named(tmp_path):
    languages = ["de", "en"] * 50
    _record(tmp_path, "gpt41", [True] * 100, languages, None, 2.0, cost_usd_per_query=0.0002)
    _record(tmp_path, "other_api", [i % 10 != 0 for i in range(100)], languages, None, 2.0, cost_usd_per_query=0.0001)
    # no artifact has a size to be the least compressed: the report says so instead of failing
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "No baseline: no variant has an artifact size" in md and "report.baseline=VARIANT" in md
    assert "| gpt41 |  |  |  | no baseline (report.baseline) |" in md
    assert "Against gpt41" not in md
    assert report_main([str(tmp_path / "sweep"), "--out", str(tmp_path / "named"), "--baseline", "gpt41"]) == 0
    named = (tmp_path / "named" / "report.md").read_text()
    # gpt41 answered the ten queries other_api got wrong: p = 2 / 2^10
    assert "Against gpt41" in named and "| other_api | 0 / 10 | 0.002 |" in named
