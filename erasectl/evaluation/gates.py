"""CI gates on an evaluate run: each limit checked against every erased model's figure, or against
the end of its 95% interval on the failing side (``--gate-on upper``)."""

from __future__ import annotations

from dataclasses import dataclass

from erasectl.errors import UserError

GATE_ON = ("point", "upper")


@dataclass(frozen=True)
class Gates:
    """The limits asked for (None: not gated), each a share of images, and what they are checked on."""

    max_erased_accuracy: float | None = None
    min_surrounding_ratio: float | None = None
    max_paraphrase_accuracy: float | None = None
    max_attack_success: float | None = None
    max_attribute_gain: float | None = None
    gate_on: str = "point"

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name != "gate_on" and value is not None and not 0 <= value <= 1:
                raise UserError(f"--{name.replace('_', '-')} is a share between 0 and 1, got {value}")
        if self.gate_on not in GATE_ON:
            raise UserError(f"--gate-on is point or upper, got {self.gate_on!r}")


def _checked(gates: Gates, row: dict, key: str, from_below: bool = False):
    """The figure a gate reads: the point, or its interval's end on the failing side."""
    value = row.get(key)
    if gates.gate_on == "point" or value is None:
        return value
    interval = row.get(f"{key}_interval95")
    if interval is None:
        return value
    return interval[0] if from_below else interval[1]


def _result(gate: str, row: dict, concept: str, limit: float, value, passed: bool, gates: Gates) -> dict:
    return {"gate": gate, "model": row["model"], "concept": concept, "limit": limit, "value": value,
            "on": gates.gate_on, "passed": passed}  # fmt: skip


def _at_most(gates: Gates, gate: str, limit: float | None, row: dict, key: str, concept: str) -> list[dict]:
    if limit is None:
        return []
    value = _checked(gates, row, key)
    return [_result(gate, row, concept, limit, value, value is not None and value <= limit, gates)]


def check_gates(metrics: dict, gates: Gates) -> list[dict]:
    """One result per gate and erased model (and concept where the gate is per concept)."""
    results = []
    for row in metrics["tables"].get("attacks", []):
        concept = f"{row['concept']} ({row['attack']})"
        results += _at_most(gates, "max-attack-success", gates.max_attack_success, row, "attack_success", concept)
    for row in metrics["tables"]["per_concept"]:
        if row["model"] == "base":
            continue
        if row["role"] == "erased":
            results += _at_most(
                gates, "max-erased-accuracy", gates.max_erased_accuracy, row, "accuracy", row["concept"]
            )
        if row["role"] == "paraphrase":
            limit = gates.max_paraphrase_accuracy
            results += _at_most(gates, "max-paraphrase-accuracy", limit, row, "accuracy", row["concept"])
        held_out = row["role"] == "surrounding" and row.get("split") == "held-out"
        if held_out and row["ratio_to_base"] is not None and gates.min_surrounding_ratio is not None:
            limit, ratio = gates.min_surrounding_ratio, _checked(gates, row, "ratio_to_base", from_below=True)
            results.append(_result("min-surrounding-ratio", row, row["concept"], limit, ratio, ratio >= limit, gates))
        if held_out and row.get("attribute_gain") is not None:
            concept = f"{row['concept']} ({row['attribute_gain_read']})"
            results += _at_most(gates, "max-attribute-gain", gates.max_attribute_gain, row, "attribute_gain", concept)
    for row in metrics["tables"]["erased_vs_surrounding"]:
        if row["model"] == "base":
            continue
        # a gate that cannot be measured says so instead of passing
        if gates.min_surrounding_ratio is not None and row["held_out_surrounding"] == 0:
            concept = "(no held-out surrounding concept)"
            results.append(
                _result("min-surrounding-ratio", row, concept, gates.min_surrounding_ratio, None, False, gates)
            )
        if gates.max_attribute_gain is not None and row.get("held_out_attribute_gain") is None:
            concept = "(no attribute reader for this model, or no held-out set)"
            results.append(_result("max-attribute-gain", row, concept, gates.max_attribute_gain, None, False, gates))
    return results


def failure_line(results: list[dict]) -> str | None:
    """The first failed gate, as one line; None when every gate passed."""
    failed = [g for g in results if not g["passed"]]
    if not failed:
        return None
    g = failed[0]
    bound = " (its interval's end)" if g.get("on") == "upper" else ""
    figure = f"is {g['value']:.3f}{bound}" if g["value"] is not None else "cannot be measured"
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"gate failed: {g['gate']} {g['limit']}: {g['model']} {g['concept']} {figure}{more}"
