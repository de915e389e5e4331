from __future__ import annotations

import pytest

from harness.measure.accuracy import INVALID, classification_metrics, wilson_interval
from harness.measure.stats import percentile


def test_wilson_interval_known_values():
    low, high = wilson_interval(95, 100)
    assert low == pytest.approx(0.8882, abs=1e-4) and high == pytest.approx(0.9785, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_metrics_count_invalid_answers_as_wrong_and_apart():
    gold = ["a", "a", "b", "b"]
    pred = ["a", None, "b", "a"]
    m = classification_metrics(gold, pred, ["en", "en", "hr", "hr"], ["a", "b", "c"])
    assert m["accuracy"] == 0.5
    assert m["invalid_rate"] == 0.25
    assert m["accuracy_by_language"] == {"en": 0.5, "hr": 0.5}
    # a: tp1 fp1 fn1 -> 0.5; b: tp1 fn1 -> 2/3; c is absent from gold and left out of macro-F1
    assert m["f1_by_intent"] == {"a": 0.5, "b": pytest.approx(2 / 3)}
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["confusion"] == {"a": {"a": 1, INVALID: 1}, "b": {"b": 1, "a": 1}}


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5


def test_energy_counters_and_estimate():
    from harness.measure.energy import EnergyMeter, cpu_time_estimate_j, rapl_delta_uj

    assert rapl_delta_uj(100, 300, 1000) == 200
    assert rapl_delta_uj(900, 100, 1000) == 200  # wrapped once
    assert cpu_time_estimate_j(2.0, 7.5) == 15.0
    with EnergyMeter("cpu") as meter:
        sum(range(10000))
    reading = meter.reading
    # measured, or unmeasured with its reason: never a number without a method
    assert (reading.joules is not None and reading.method == "rapl_powercap") or (
        reading.joules is None and reading.reason
    )


def test_median_interval_covers_95_percent_without_assuming_a_shape():
    from harness.measure.stats import median_interval

    assert median_interval([3.0, 1.0, 2.0]) == [1.0, 3.0]  # too few values for 95%: the whole range
    assert median_interval([float(v) for v in range(10)]) == [1.0, 8.0]  # P = 97.9% for ranks 2 and 9
    assert median_interval([float(v) for v in range(30)]) == [9.0, 20.0]
