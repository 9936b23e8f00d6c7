"""95% intervals for the rates erasectl reports: Wilson's for a share of independent images, a
bootstrap over seeds where a figure pools images that share their seeds (several prompt sets
drawn from the same noise, or base and erased images of the same seed)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RESAMPLES = 2000  # bootstrap draws: the interval's ends move by well under a point between runs
BOOTSTRAP_SEED = 0  # fixed, so that a report is reproducible


def wilson(hits: int, count: int) -> list[float] | None:
    """Wilson's 95% score interval (by scipy) for ``hits`` of ``count`` images; None for no image."""
    from scipy.stats import binomtest

    if count <= 0:
        return None
    found = binomtest(int(hits), int(count)).proportion_ci(0.95, method="wilson")
    return [round(float(found.low), 4), round(float(found.high), 4)]


def interval95(share: float, count: int) -> list[float] | None:
    """Wilson's interval for a share of ``count`` images: how far another draw of as many seeds
    may move it. It says nothing of an erasure's own seed, nor of an attack's own images and noise."""
    return wilson(round(share * count), count)


def seed_bootstrap(
    per_seed: dict[str, np.ndarray], statistic: Callable[[dict[str, np.ndarray]], np.ndarray]
) -> list[float] | None:
    """A percentile 95% interval of ``statistic`` with the seeds resampled with replacement.

    ``per_seed`` holds sums per seed, arrays of shape (seeds, ...) (hits and counts); each draw
    weighs every seed by how often it was drawn, and ``statistic`` gets the weighted sums (shape
    (draws, ...)) and returns one figure per draw (NaN where a draw leaves it undefined)."""
    first = next(iter(per_seed.values()))
    seeds = first.shape[0]
    if seeds == 0:
        return None
    generator = np.random.default_rng(BOOTSTRAP_SEED)
    weights = generator.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=RESAMPLES).astype(float)
    sums = {name: np.tensordot(weights, values.astype(float), axes=(1, 0)) for name, values in per_seed.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        figures = np.asarray(statistic(sums), dtype=float)
    figures = figures[np.isfinite(figures)]
    if figures.size == 0:
        return None
    low, high = np.percentile(figures, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def half_width(value: float | None, interval: list[float] | None) -> float | None:
    """How far the interval reaches from the figure, on its wider side (Wilson's is not symmetric)."""
    if value is None or interval is None:
        return None
    return round(max(value - interval[0], interval[1] - value), 4)
