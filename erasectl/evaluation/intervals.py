"""The 95% interval of every rate in evaluate's tables, and the attributes an erased model's images
gain that their prompts never asked for.

A share of one prompt set's images gets Wilson's interval. A figure that pools images sharing their
seeds (a mean over several held-out sets; a ratio or difference between the erased and the base
model's images of the same seeds) gets a bootstrap over seeds (``erasectl.statistics``), widened
to hold Wilson's interval of its images taken as independent: a bootstrap cannot reach past what
its seeds show, so where every image agrees it would claim a point.
"""

from __future__ import annotations

import numpy as np

from erasectl.evaluation.judging import ImageRecord
from erasectl.evaluation.tables import preserved_concepts, split_of
from erasectl.statistics import seed_bootstrap, wilson


class Images:
    """The judged images of one evaluate run, by model, prompt set and seed."""

    def __init__(self, records: list[ImageRecord]):
        self.seeds = sorted({r.seed for r in records})
        self._row = {seed: i for i, seed in enumerate(self.seeds)}
        self.by_set: dict[tuple[str, str], list[ImageRecord]] = {}
        for record in records:
            self.by_set.setdefault((record.model, f"{record.role}:{record.concept}"), []).append(record)

    def per_seed(self, model: str, key: str, hit, counted=lambda r: True) -> tuple[np.ndarray, np.ndarray]:
        """Per seed: how many of the set's counted images are hits, and how many were counted."""
        hits, counts = np.zeros(len(self.seeds)), np.zeros(len(self.seeds))
        for record in self.by_set.get((model, key), []):
            if counted(record):
                counts[self._row[record.seed]] += 1
                hits[self._row[record.seed]] += bool(hit(record))
        return hits, counts

    def wilson(self, model: str, key: str, hit, counted=lambda r: True) -> list[float] | None:
        hits, counts = self.per_seed(model, key, hit, counted)
        return wilson(int(hits.sum()), int(counts.sum()))

    def mean_over_sets(self, model: str, keys: list[str], hit, counted=lambda r: True) -> list[float] | None:
        """The interval of the mean of the sets' shares (the headline's held-out figures)."""
        if not keys:
            return None
        pairs = [self.per_seed(model, key, hit, counted) for key in keys]
        per_seed = {"hits": np.stack([h for h, _ in pairs], 1), "counts": np.stack([c for _, c in pairs], 1)}
        found = seed_bootstrap(per_seed, lambda s: np.nanmean(s["hits"] / s["counts"], axis=-1))
        return hull(found, wilson(int(per_seed["hits"].sum()), int(per_seed["counts"].sum())))

    def ratio(self, model: str, base: str, key: str) -> list[float] | None:
        """The interval of a set's accuracy over the base's on the same seeds."""
        erased, erased_n = self.per_seed(model, key, _correct)
        base_hits, base_n = self.per_seed(base, key, _correct)
        per_seed = {"e": erased, "en": erased_n, "b": base_hits, "bn": base_n}
        found = seed_bootstrap(per_seed, lambda s: (s["e"] / s["en"]) / (s["b"] / s["bn"]))
        alone = wilson(int(erased.sum()), int(erased_n.sum()))
        base_share = float(base_hits.sum() / base_n.sum()) if base_n.sum() else 0.0
        return hull(found, [round(v / base_share, 4) for v in alone] if alone and base_share else None)


def hull(first: list[float] | None, second: list[float] | None) -> list[float] | None:
    """The smallest interval holding both."""
    if first is None or second is None:
        return first or second
    return [float(min(first[0], second[0])), float(max(first[1], second[1]))]


def _correct(record: ImageRecord) -> bool:
    return record.correct


def _asked(name: str):
    return lambda r: r.attributes is not None and r.attributes["asked"].get(name) is not None


def _right(name: str):
    return lambda r: r.attributes["read"].get(name) == r.attributes["asked"].get(name)


def attribute_gain(images: Images, model: str, base: str, key: str, attributes: tuple[str, ...]) -> dict | None:
    """The attribute value the erased model's images of one set show most more often than the
    base's images of the same prompts and seeds, where their prompt did not ask for it (every
    "green square" drawn striped): ``{"read", "gain", "interval95"}``, None without attributes."""
    erased_records = images.by_set.get((model, key), [])
    if not erased_records or not attributes or erased_records[0].attributes is None:
        return None
    best = None
    for name in attributes:
        values = {r.attributes["read"].get(name) for r in erased_records} - {None}
        for value in sorted(values):
            unasked = _unasked(name, value)
            erased, count = images.per_seed(model, key, unasked)
            before, base_count = images.per_seed(base, key, unasked)
            gain = erased.sum() / count.sum() - before.sum() / base_count.sum()
            if best is None or gain > best[0]:
                best = (gain, name, value, {"e": erased, "en": count, "b": before, "bn": base_count})
    if best is None:  # the reader read none of these attributes
        return None
    gain, name, value, per_seed = best
    interval = seed_bootstrap(per_seed, lambda s: s["e"] / s["en"] - s["b"] / s["bn"])
    alone, before = (
        wilson(int(per_seed["e"].sum()), int(per_seed["en"].sum())),
        per_seed["b"].sum() / per_seed["bn"].sum(),
    )
    interval = hull(interval, [round(v - before, 4) for v in alone])
    return {"read": f"{name}: {value}", "gain": round(float(gain), 4), "interval95": interval}


def _unasked(name: str, value: str):
    """An image reads ``value`` for attribute ``name`` although its prompt did not ask for it."""
    return lambda r: r.attributes["read"].get(name) == value and r.attributes["asked"].get(name) != value


def add_intervals(tables: dict, records: list[ImageRecord], base: str, infos: dict, side_attributes=()) -> None:
    """Every rate of ``tables``' headline and per-set rows gets ``<rate>_interval95``; every
    erased model's set its ``attribute_gain`` (with ``attribute_gain_read`` and interval), and
    its headline the largest over the held-out sets."""
    images = Images(records)
    for row in tables["per_concept"]:
        _per_concept_intervals(images, row, base, side_attributes)
    for row in tables["erased_vs_surrounding"]:
        _headline_intervals(images, row, base, infos, tables["per_concept"])


def _per_concept_intervals(images: Images, row: dict, base: str, side_attributes) -> None:
    model, key = row["model"], f"{row['role']}:{row['concept']}"
    row["accuracy_interval95"] = images.wilson(model, key, _correct)
    for name in ("colour", "style", "outline"):
        if row.get(f"{name}_accuracy") is not None:
            row[f"{name}_accuracy_interval95"] = images.wilson(model, key, _right(name), _asked(name))
    if model == base:
        return
    if row.get("ratio_to_base") is not None:
        row["ratio_to_base_interval95"] = images.ratio(model, base, key)
    gain = attribute_gain(images, model, base, key, tuple(side_attributes))
    if gain is not None:
        row.update(
            attribute_gain=gain["gain"], attribute_gain_read=gain["read"], attribute_gain_interval95=gain["interval95"]
        )


def _headline_intervals(images: Images, row: dict, base: str, infos: dict, per_concept: list[dict]) -> None:
    model = row["model"]
    preserved = preserved_concepts(infos.get(model, {}))
    sets = [r for r in per_concept if r["model"] == model]
    erased_key = next(f"erased:{r['concept']}" for r in sets if r["role"] == "erased")
    held_out = [
        f"surrounding:{r['concept']}"
        for r in sets
        if r["role"] == "surrounding" and split_of(r["concept"], preserved) == "held-out"
    ]
    kept = [
        f"surrounding:{r['concept']}"
        for r in sets
        if r["role"] == "surrounding" and split_of(r["concept"], preserved) == "preserved"
    ]
    row["erased_accuracy_interval95"] = images.wilson(model, erased_key, _correct)
    row["surrounding_accuracy_interval95"] = images.mean_over_sets(model, held_out, _correct)
    if row.get("preserved_surrounding_accuracy") is not None:
        row["preserved_surrounding_accuracy_interval95"] = images.mean_over_sets(model, kept, _correct)
    if row.get("erased_outline_accuracy") is not None:
        row["erased_outline_accuracy_interval95"] = images.wilson(
            model, erased_key, _right("outline"), _asked("outline")
        )
    if row.get("held_out_outline_accuracy") is not None:
        row["held_out_outline_accuracy_interval95"] = images.mean_over_sets(
            model, held_out, _right("outline"), _asked("outline")
        )
    for name in ("colour", "style"):
        if row.get(f"held_out_{name}_accuracy") is not None:
            row[f"held_out_{name}_accuracy_interval95"] = images.mean_over_sets(
                model, held_out, _right(name), _asked(name)
            )
    gains = [r for r in sets if f"surrounding:{r['concept']}" in held_out and r.get("attribute_gain") is not None]
    if gains:
        worst = max(gains, key=lambda r: r["attribute_gain"])
        row.update(
            held_out_attribute_gain=worst["attribute_gain"],
            held_out_attribute_gain_read=f"{worst['concept']}, {worst['attribute_gain_read']}",
            held_out_attribute_gain_interval95=worst["attribute_gain_interval95"],
        )
