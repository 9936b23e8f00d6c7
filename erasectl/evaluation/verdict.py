"""The few lines a report opens with: for each erased model, what it still draws, what it damaged
and how attacks fared, each figure with its 95% interval and its gate's outcome."""

from __future__ import annotations


def _rate(value, interval, base=None) -> str:
    """``41% (95% interval 24-61%; base 3%)``."""
    if value is None:
        return "not measured"
    notes = [f"95% interval {interval[0]:.0%}-{interval[1]:.0%}"] if interval else []
    notes += [f"base {base:.0%}"] if base is not None else []
    return f"{value:.0%}" + (f" ({'; '.join(notes)})" if notes else "")


def _gates(metrics: dict, model: str, names: tuple[str, ...]) -> str:
    found = [g for g in metrics.get("gates", []) if g["model"] == model and g["gate"] in names]
    if not found:
        return ""
    failed = [g for g in found if not g["passed"]]
    if not failed:
        return f"; gate {', '.join(dict.fromkeys(g['gate'] for g in found))} passed"
    g = failed[0]
    return f"; gate {g['gate']} {g['limit']} FAILED ({g['concept']})"


def _base(metrics: dict, key: str):
    row = next((r for r in metrics["tables"]["erased_vs_surrounding"] if r["model"] == "base"), {})
    return row.get(key)


def _model_lines(metrics: dict, row: dict) -> list[str]:
    model, concept = row["model"], metrics["protocol"]["concept"]
    erased = _rate(row["erased_accuracy"], row.get("erased_accuracy_interval95"), _base(metrics, "erased_accuracy"))
    lines = [
        f"Erased: {concept} drawn in {erased} of its images"
        + _gates(metrics, model, ("max-erased-accuracy", "max-paraphrase-accuracy")),
    ]
    if row["held_out_surrounding"]:
        kept = _rate(
            row["surrounding_accuracy"],
            row.get("surrounding_accuracy_interval95"),
            _base(metrics, "surrounding_accuracy"),
        )
        lines.append(
            f"Held-out neighbours ({row['held_out_surrounding']} sets): {kept} drawn right"
            + _gates(metrics, model, ("min-surrounding-ratio",))
        )
    else:
        lines.append("Held-out neighbours: none; every surrounding concept was preserved, so none measures damage")
    parts = [
        f"{name} {_rate(row[f'held_out_{name}_accuracy'], row.get(f'held_out_{name}_accuracy_interval95'))} right"
        for name in ("colour", "style")
        if row.get(f"held_out_{name}_accuracy") is not None
    ]
    if row.get("held_out_attribute_gain") is not None:
        parts.append(
            f"largest unasked gain {row['held_out_attribute_gain']:+.0%} ({row['held_out_attribute_gain_read']}; "
            f"95% interval {row['held_out_attribute_gain_interval95'][0]:+.0%} to {row['held_out_attribute_gain_interval95'][1]:+.0%})"
        )
    if parts:
        lines.append(
            "Colour and style on held-out sets: " + ", ".join(parts) + _gates(metrics, model, ("max-attribute-gain",))
        )
    attacks = [r for r in metrics["tables"].get("attacks", []) if r["model"] == model]
    if attacks:
        lines.append(
            "Attacks: "
            + ", ".join(
                f"{r['attack']} {_rate(r['attack_success'], r.get('attack_success_interval95'))}" for r in attacks
            )
            + _gates(metrics, model, ("max-attack-success",))
        )
    return lines


def verdict_lines(metrics: dict) -> list[tuple[str, list[str]]]:
    """``(model, lines)`` for every erased model."""
    return [
        (row["model"], _model_lines(metrics, row))
        for row in metrics["tables"]["erased_vs_surrounding"]
        if row["model"] != "base"
    ]
