"""The fidelity benchmark's verdict: from the interval of paired rounds' ratios, not one figure."""

from harness.measure.fidelity import AGREES, DIFFERS, UNDECIDED, agreement


def test_paired_rounds_cancel_drift_that_moves_both_sides():
    # The machine slows down round by round; both sides slow alike, so they agree.
    reference = [100.0, 90.0, 80.0, 70.0, 60.0]
    ours = [r * 0.99 for r in reference]
    ratio, interval, verdict = agreement(ours, reference, 0.05)
    assert verdict == AGREES and abs(ratio - 0.99) < 1e-9 and interval[0] <= 0.99 <= interval[1]


def test_a_gap_wholly_outside_the_band_differs_and_a_straddling_one_is_undecided():
    reference = [100.0] * 5
    assert agreement([80.0, 82.0, 81.0, 79.0, 80.0], reference, 0.05)[2] == DIFFERS
    # A median ratio of 0.92 (the reading that failed the old point check) whose rounds reach
    # into the band is a difference inside the noise, not a verdict either way.
    assert agreement([92.0, 97.0, 90.0, 88.0, 92.0], reference, 0.05)[2] == UNDECIDED
