"""CI gates on an evaluate run: each limit checked against every erased model's figure."""

from __future__ import annotations

from dataclasses import dataclass

from erasectl.errors import UserError


@dataclass(frozen=True)
class Gates:
    """The limits asked for (None: not gated). Each is a share of images."""

    max_erased_accuracy: float | None = None
    min_surrounding_ratio: float | None = None
    max_paraphrase_accuracy: float | None = None
    max_attack_success: float | None = None

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and not 0 <= value <= 1:
                raise UserError(f"--{name.replace('_', '-')} is a share between 0 and 1, got {value}")


def _result(gate: str, row: dict, concept: str, limit: float, value, passed: bool) -> dict:
    return {"gate": gate, "model": row["model"], "concept": concept, "limit": limit, "value": value, "passed": passed}


def check_gates(metrics: dict, gates: Gates) -> list[dict]:
    """One result per gate and erased model (and concept where the gate is per concept)."""
    results = []
    if gates.max_attack_success is not None:
        for row in metrics["tables"].get("attacks", []):
            value = row["attack_success"]
            concept = f"{row['concept']} ({row['attack']})"
            results.append(
                _result(
                    "max-attack-success",
                    row,
                    concept,
                    gates.max_attack_success,
                    value,
                    value <= gates.max_attack_success,
                )
            )
    for row in metrics["tables"]["per_concept"]:
        if row["model"] == "base":
            continue
        if row["role"] == "erased" and gates.max_erased_accuracy is not None:
            limit = gates.max_erased_accuracy
            results.append(
                _result("max-erased-accuracy", row, row["concept"], limit, row["accuracy"], row["accuracy"] <= limit)
            )
        if row["role"] == "paraphrase" and gates.max_paraphrase_accuracy is not None:
            limit = gates.max_paraphrase_accuracy
            results.append(
                _result(
                    "max-paraphrase-accuracy", row, row["concept"], limit, row["accuracy"], row["accuracy"] <= limit
                )
            )
        held_out = row["role"] == "surrounding" and row.get("split") == "held-out" and row["ratio_to_base"] is not None
        if held_out and gates.min_surrounding_ratio is not None:
            limit, ratio = gates.min_surrounding_ratio, row["ratio_to_base"]
            results.append(_result("min-surrounding-ratio", row, row["concept"], limit, ratio, ratio >= limit))
    if gates.min_surrounding_ratio is not None:
        # no held-out concept: the gate cannot be measured, and says so instead of passing
        for row in metrics["tables"]["erased_vs_surrounding"]:
            if row["model"] != "base" and row["held_out_surrounding"] == 0:
                concept = "(no held-out surrounding concept)"
                results.append(_result("min-surrounding-ratio", row, concept, gates.min_surrounding_ratio, None, False))
    return results


def failure_line(results: list[dict]) -> str | None:
    """The first failed gate, as one line; None when every gate passed."""
    failed = [g for g in results if not g["passed"]]
    if not failed:
        return None
    g = failed[0]
    figure = f"is {g['value']:.3f}" if g["value"] is not None else "cannot be measured"
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"gate failed: {g['gate']} {g['limit']}: {g['model']} {g['concept']} {figure}{more}"
