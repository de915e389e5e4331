"""Is a variant as good as the baseline, in every language? Two variants' answers to the same
test queries, compared query by query.

- Flips: the queries the variant fixed (baseline wrong, variant right) and broke.
- An exact McNemar test on the flips: the two-sided binomial test of fixed against broken.
- A paired bootstrap interval of the accuracy difference that resamples phrasing clusters,
  not queries: queries written from one phrasing succeed or fail together, so resampling them
  one by one would give an interval too narrow.
- A non-inferiority gate on that interval, as MLPerf's "99% of the reference" but on the 95%
  interval of the variant's accuracy relative to the baseline's, never on the point estimate,
  with three outcomes: pass (the lower bound reaches the margin), fail (the upper bound is
  below it: shown worse) and inconclusive (the interval straddles it: this split cannot tell).
- The smallest margin the test split resolves: the relative interval's half-width. A gate whose
  margin is narrower cannot pass even a variant exactly as accurate as the baseline that flips
  as many answers, only leave it inconclusive.

Pure functions over per-query correctness; reading predictions is the callers' concern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from harness.record import Prediction

RESAMPLES = 2000
BETTER, WORSE, SAME = "better", "worse", "indistinguishable"
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def gate(relative_ci95: tuple[float, float], min_relative_accuracy: float) -> str:
    """The non-inferiority gate on the 95% interval of relative accuracy: pass when its lower
    bound reaches the margin, fail when its upper bound is below it (shown worse), else
    inconclusive (it straddles the margin)."""
    low, high = relative_ci95
    return PASS if low >= min_relative_accuracy else FAIL if high < min_relative_accuracy else INCONCLUSIVE


def resolvable_margin(relative_ci95: tuple[float, float]) -> float:
    """The smallest margin (1 - min_relative_accuracy) this comparison can resolve: the relative
    interval's half-width. An equally accurate variant's lower bound sits about that far below 1."""
    low, high = relative_ci95
    return (high - low) / 2


@dataclass(frozen=True)
class Paired:
    n: int
    fixed: int  # baseline wrong, variant right
    broken: int  # baseline right, variant wrong
    difference: float  # variant accuracy minus baseline accuracy
    difference_ci95: tuple[float, float]
    relative_ci95: tuple[float, float]  # variant accuracy / baseline accuracy
    mcnemar_p: float

    @property
    def verdict(self) -> str:
        low, high = self.difference_ci95
        return BETTER if low > 0 else WORSE if high < 0 else SAME

    def gate(self, min_relative_accuracy: float) -> str:
        return gate(self.relative_ci95, min_relative_accuracy)

    @property
    def resolvable_margin(self) -> float:
        return resolvable_margin(self.relative_ci95)


def mcnemar_exact_p(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: the chance, were fixing and breaking equally likely,
    of a split of the flips at least this uneven."""
    n = fixed + broken
    if n == 0:
        return 1.0
    tail: float = sum(math.comb(n, k) for k in range(min(fixed, broken) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(
    baseline: Sequence[bool],
    variant: Sequence[bool],
    clusters: Sequence[str],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """95% percentile intervals of (variant - baseline accuracy, variant / baseline accuracy)
    over `resamples` draws of whole clusters with replacement (seeded: the same answers give
    the same interval)."""
    import numpy as np

    names = sorted(set(clusters))
    index = {c: i for i, c in enumerate(names)}
    ids = np.array([index[c] for c in clusters])
    size = np.bincount(ids, minlength=len(names))
    base = np.bincount(ids, weights=np.asarray(baseline, dtype=float), minlength=len(names))
    var = np.bincount(ids, weights=np.asarray(variant, dtype=float), minlength=len(names))
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    n, b, v = size[draws].sum(axis=1), base[draws].sum(axis=1), var[draws].sum(axis=1)
    difference = (v - b) / n
    # a draw where the baseline got nothing right: as good (nothing either) or infinitely better
    relative = np.divide(v, b, out=np.where(v > 0, np.inf, 1.0), where=b > 0)
    low, high = np.percentile(difference, [2.5, 97.5])
    # order statistics, not interpolation, which infinite ratios would turn into nan
    rel_low, rel_high = np.percentile(relative, 2.5, method="lower"), np.percentile(relative, 97.5, method="higher")
    return (float(low), float(high)), (float(rel_low), float(rel_high))


def paired(baseline: Sequence[bool], variant: Sequence[bool], clusters: Sequence[str]) -> Paired:
    """The comparison of two variants' correctness on the same queries, in the same order."""
    if not (len(baseline) == len(variant) == len(clusters)) or not baseline:
        raise ValueError("a paired comparison needs the same queries, answered by both variants")
    fixed = sum(v and not b for b, v in zip(baseline, variant))
    broken = sum(b and not v for b, v in zip(baseline, variant))
    difference_ci, relative_ci = paired_bootstrap(baseline, variant, clusters)
    return Paired(
        len(baseline),
        fixed,
        broken,
        (fixed - broken) / len(baseline),
        difference_ci,
        relative_ci,
        mcnemar_exact_p(fixed, broken),
    )


def cluster_of(p: Prediction) -> str:
    """The phrasing a query was written from (the synthetic data's template), else its text:
    queries that share it are not independent."""
    return p.template_id or p.text


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline, overall and per language, with the gate's verdicts."""

    overall: Paired
    by_language: dict[str, Paired]
    min_relative_accuracy: float

    @property
    def gate(self) -> str:
        """Pass only when overall and every language pass; fail when overall or any language is
        shown worse; else inconclusive."""
        outcomes = {self.overall.gate(self.min_relative_accuracy), *self.outcomes.values()}
        return FAIL if FAIL in outcomes else INCONCLUSIVE if INCONCLUSIVE in outcomes else PASS

    @property
    def outcomes(self) -> dict[str, str]:
        """Each language's gate outcome."""
        return {lang: p.gate(self.min_relative_accuracy) for lang, p in self.by_language.items()}

    def languages_with(self, outcome: str) -> list[str]:
        return [lang for lang, o in self.outcomes.items() if o == outcome]

    @property
    def resolvable_margins(self) -> dict[str, float]:
        """The smallest margin the split resolves in each language (`resolvable_margin`)."""
        return {lang: p.resolvable_margin for lang, p in self.by_language.items()}

    @property
    def hurt_most(self) -> Optional[str]:
        """The language whose accuracy the variant lowered most (None: it lowered none)."""
        lang, p = min(self.by_language.items(), key=lambda item: item[1].difference, default=(None, None))
        return lang if p is not None and p.difference < 0 else None


def compare(
    baseline_rows: list[Prediction], variant_rows: list[Prediction], min_relative_accuracy: float
) -> Comparison:
    """Two variants' predictions (rows of predictions.jsonl) on the same test split, in the same order."""
    if [r.text for r in baseline_rows] != [r.text for r in variant_rows]:
        raise ValueError("the two variants answered different test queries: compare runs on the same test split")

    languages = sorted({r.language for r in baseline_rows})
    by_language = {}
    for lang in languages:
        idx = [i for i, r in enumerate(baseline_rows) if r.language == lang]
        by_language[lang] = paired(
            [baseline_rows[i].correct for i in idx],
            [variant_rows[i].correct for i in idx],
            [cluster_of(baseline_rows[i]) for i in idx],
        )
    overall = paired(
        [r.correct for r in baseline_rows],
        [r.correct for r in variant_rows],
        [cluster_of(r) for r in baseline_rows],
    )
    return Comparison(overall, by_language, min_relative_accuracy)
