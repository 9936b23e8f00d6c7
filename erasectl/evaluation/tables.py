"""The tables of metrics.json: held-out splits, per concept, drift, distribution distances, timing."""

from __future__ import annotations

import torch

from erasectl.evaluation.drift import distribution_distances, feature_distances, ssim_pairs
from erasectl.evaluation.judging import ImageRecord
from erasectl.evaluation.protocol import Protocol


def image_drift(records: list[ImageRecord], base: str) -> dict[str, dict[str, dict]]:
    """Per model, per prompt set: the mean judge-feature distance and SSIM of each image to the
    base image of the same prompt and seed (``erasectl.evaluation.drift``)."""

    by_key = {(r.role, r.concept, r.prompt, r.seed): r for r in records if r.model == base}
    grouped: dict[tuple[str, str], list[tuple[ImageRecord, ImageRecord]]] = {}
    for record in records:
        twin = by_key.get((record.role, record.concept, record.prompt, record.seed))
        if record.model != base and twin is not None and record.image is not None:
            grouped.setdefault((record.model, f"{record.role}:{record.concept}"), []).append((twin, record))
    drift: dict[str, dict[str, dict]] = {}
    for (model, key), pairs in grouped.items():
        distance = feature_distances(
            torch.stack([b.embedding for b, _ in pairs]), torch.stack([e.embedding for _, e in pairs])
        )
        ssim = ssim_pairs([b.image for b, _ in pairs], [e.image for _, e in pairs])
        drift.setdefault(model, {})[key] = {"judge_distance": _mean(distance), "ssim": _mean(ssim)}
    return drift


def distribution_table(
    records: list[ImageRecord], base: str, infos: dict, general: dict[str, torch.Tensor]
) -> list[dict]:
    """FID and KID on the judge's features, base against each erased model: over the held-out
    surrounding prompts (all surrounding prompts where none is held out, said in ``over``), and
    over the general prompts when given."""

    rows = []
    for model in dict.fromkeys(r.model for r in records):
        if model == base:
            continue
        preserved = preserved_concepts(infos.get(model, {}))
        held_out = {
            r.concept for r in records if r.role == "surrounding" and split_of(r.concept, preserved) == "held-out"
        }
        over, concepts = (
            ("held-out surroundings", held_out)
            if held_out
            else ("all surroundings (none held out)", {r.concept for r in records if r.role == "surrounding"})
        )

        def pick(name: str, concepts: set[str] = concepts) -> list:
            return [
                r.embedding for r in records if r.model == name and r.role == "surrounding" and r.concept in concepts
            ]

        base_embeds, erased_embeds = pick(base), pick(model)
        if base_embeds and erased_embeds:
            rows.append(
                {
                    "model": model,
                    "over": over,
                    **distribution_distances(torch.stack(base_embeds), torch.stack(erased_embeds)),
                }
            )
        if model in general and base in general:
            rows.append(
                {"model": model, "over": "general prompts", **distribution_distances(general[base], general[model])}
            )
    return rows


def preserved_concepts(info: dict) -> set[str]:
    """The concepts an erasure kept, given or by default: its recipe's ``preserve``, resolved once
    when it was made (checkpoints made before 0.2.0, without ``preserve_source``, kept the resolved list
    under ``preserved``)."""
    recipe = info.get("recipe", {})
    kept = (
        recipe.get("preserve") if "preserve_source" in recipe else (recipe.get("preserved") or recipe.get("preserve"))
    )
    return {" ".join(c.lower().split()) for c in (kept or [])}


def prior_words(info: dict) -> set[str]:
    """The words of a null-space erasure's automatic prior (kept by construction, not named)."""
    prior = info.get("recipe", {}).get("prior") or {}
    return {w for phrase in prior.get("phrases", []) for w in phrase.lower().split()}


def split_of(concept: str, preserved: set[str]) -> str:
    return "preserved" if " ".join(concept.lower().split()) in preserved else "held-out"


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _attribute(value: dict, name: str):
    return value.get("attributes", {}).get(name, {}).get("accuracy")


def _held_out_mean(sets: list[dict], read) -> float | None:
    return _mean([a for a in (read(v) for v in sets) if a is not None])


def _headline_row(model: str, sets: dict, erased_key: str, preserved: set[str], moved: dict) -> dict:
    """One model's erased-vs-surrounding row: the held-out surroundings apart from the preserved."""
    surrounding = [v for v in sets.values() if v["role"] == "surrounding"]
    held_out_sets = [v for v in surrounding if split_of(v["concept"], preserved) == "held-out"]
    kept = [v["accuracy"] for v in surrounding if split_of(v["concept"], preserved) == "preserved"]

    def drifted(name: str):
        return lambda v: moved.get(f"surrounding:{v['concept']}", {}).get(name)

    return {
        "model": model,
        "erased_accuracy": sets[erased_key]["accuracy"],
        "surrounding_accuracy": _mean([v["accuracy"] for v in held_out_sets]),
        "held_out_surrounding": len(held_out_sets),
        "preserved_surrounding_accuracy": _mean(kept),
        "preserved_surrounding": len(kept),
        "held_out_colour_accuracy": _held_out_mean(held_out_sets, lambda v: _attribute(v, "colour")),
        "held_out_style_accuracy": _held_out_mean(held_out_sets, lambda v: _attribute(v, "style")),
        # the shapes world's second reading: the shape by its outline, not the judge
        "erased_outline_accuracy": _attribute(sets[erased_key], "outline"),
        "held_out_outline_accuracy": _held_out_mean(held_out_sets, lambda v: _attribute(v, "outline")),
        "held_out_judge_distance": _held_out_mean(held_out_sets, drifted("judge_distance")),
        "held_out_ssim": _held_out_mean(held_out_sets, drifted("ssim")),
        "ablation_convention_anchor_beats_concept": sets[erased_key].get("ablation_convention_anchor_beats_concept"),
    }


def _concept_row(
    model: str, base: str, key: str, value: dict, base_value: dict, moved: dict, preserved: set[str], in_prior: set[str]
) -> dict:
    """One model's row for one prompt set, beside the base's figures."""
    ratio = round(value["accuracy"] / base_value["accuracy"], 4) if base_value["accuracy"] else None
    row = {
        "model": model, "role": value["role"], "concept": value["concept"], "accuracy": value["accuracy"],
        "base_accuracy": base_value["accuracy"], "ratio_to_base": ratio, "clip_score": value["clip_score"],
        "base_clip_score": base_value["clip_score"],
    }  # fmt: skip
    if key in moved:
        row.update(moved[key])
    if "attributes" in value:
        for name in ("shape", "colour", "style", "outline"):
            row[f"{name}_accuracy"] = _attribute(value, name)
            row[f"base_{name}_accuracy"] = _attribute(base_value, name)
    if value["role"] == "surrounding" and model != base:
        row["split"] = split_of(value["concept"], preserved)
        if in_prior:
            # held out from what was named, but its words are in the automatic prior
            row["in_prior"] = set(value["concept"].lower().split()) <= in_prior
    return row


def _replacement_row(model: str, value: dict) -> dict:
    """What an erased or paraphrase prompt set was drawn as instead."""
    reads = {f"{name}_read": a["read"] for name, a in value.get("attributes", {}).items()}
    return {
        "model": model,
        "role": value["role"],
        "concept": value["concept"],
        "judged_as": value["judged_as"],
        **reads,
    }


def _distance_rows(
    model: str, base: str, summary: dict, distances: dict[str, float], preserved: set[str]
) -> list[dict]:
    rows = []
    for concept, distance in distances.items():
        key = f"surrounding:{concept}"
        accuracy, base_accuracy = summary[model][key]["accuracy"], summary[base][key]["accuracy"]
        rows.append({
            "model": model, "concept": concept, "split": split_of(concept, preserved), "distance": distance,
            "accuracy": accuracy, "accuracy_drop": round(base_accuracy - accuracy, 4),
        })  # fmt: skip
    return rows


def build_tables(
    summary: dict, protocol: Protocol, base: str, distances: dict[str, float], infos: dict, drift: dict | None = None
) -> dict:
    """The seed document's four tables, for every erased model. Surrounding concepts are split into
    those the erasure preserved and those it was not told about (held out): the headline
    surrounding figure and the gates read the held-out ones only, since a preserved concept
    scoring itself says nothing about collateral damage."""
    erased_key = f"erased:{protocol.concept}"
    names = ("erased_vs_surrounding", "per_concept", "timing", "distance_vs_accuracy", "replacement")
    tables: dict[str, list] = {name: [] for name in names}
    drift = drift or {}
    for model, sets in summary.items():
        moved = drift.get(model, {})
        preserved = preserved_concepts(infos.get(model, {}))
        in_prior = prior_words(infos.get(model, {}))
        tables["erased_vs_surrounding"].append(_headline_row(model, sets, erased_key, preserved, moved))
        for key, value in sets.items():
            row = _concept_row(model, base, key, value, summary[base][key], moved, preserved, in_prior)
            if value["role"] in ("erased", "paraphrase"):
                tables["replacement"].append(_replacement_row(model, value))
            tables["per_concept"].append(row)
        if model != base:
            recipe = infos[model].get("recipe", {})
            timing = {k: recipe.get(k) for k in ("method", "steps", "wall_time_s")}
            tables["timing"].append({"model": model, **timing})
            tables["distance_vs_accuracy"] += _distance_rows(model, base, summary, distances, preserved)
    return tables


def filter_warnings(infos: dict, judge_name: str) -> list[str]:
    """An erasure whose anchor images were filtered by the judge that now scores it is not judged
    independently: say so."""
    return [
        f"{name}: its anchor images were filtered by {judge_name}, the judge scoring it; its figures are not independent"
        for name, info in infos.items()
        if info.get("recipe", {}).get("anchor_filter") == judge_name
    ]


def held_out_warnings(tables: dict, base: str) -> list[str]:
    """A protocol whose held-out set is empty says so, rather than showing the preserved
    concepts' own accuracy as the surroundings' figure."""
    return [
        f"{row['model']}: every surrounding concept was preserved by the erasure, so none measures its collateral damage; "
        "evaluate with --surrounding concepts it was not told about"
        for row in tables["erased_vs_surrounding"]
        if row["model"] != base and row["held_out_surrounding"] == 0
    ]
