"""Each image judged: its class, CLIP score and read attributes, and the per-set summary."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import torch

from erasectl.architecture import pooled_text_embeddings
from erasectl.evaluation.protocol import PromptSet, Protocol
from erasectl.statistics import wilson


@dataclass
class ImageRecord:
    model: str
    role: str
    concept: str
    label: str
    prompt: str
    seed: int
    judged: str
    correct: bool
    clip_score: float
    anchor_beats_concept: bool | None
    image: object = field(repr=False, default=None)
    attributes: dict | None = None  # {"read": {...}, "asked": {...}} where the profile reads attributes
    embedding: object = field(repr=False, default=None)  # the judge's image embedding


def judge_images(
    judge, protocol: Protocol, prompt_set: PromptSet, items, model_name: str, attribute_reader=None
) -> list[ImageRecord]:
    embeds = judge.embed_images([item.image for item in items])
    texts = [protocol.judge_template.format(c) for c in protocol.candidates]
    judged = judge.classify(embeds, texts).tolist()
    scores = judge.clip_score(embeds, [item.prompt for item in items]).tolist()
    anchor_wins = [None] * len(items)
    if protocol.anchor and prompt_set.role == "erased":
        pair = judge.embed_texts(
            [protocol.judge_template.format(protocol.anchor), protocol.judge_template.format(protocol.concept)]
        )
        similarity = embeds @ pair.T
        anchor_wins = (similarity[:, 0] > similarity[:, 1]).tolist()
    attributes = (
        attribute_reader([item.image for item in items], [item.prompt for item in items])
        if attribute_reader
        else [None] * len(items)
    )
    return [
        ImageRecord(
            model_name,
            prompt_set.role,
            prompt_set.concept,
            prompt_set.label,
            item.prompt,
            item.seed,
            protocol.candidates[j],
            protocol.candidates[j] == prompt_set.label,
            round(s, 4),
            a,
            item.image,
            attr,
            e,
        )
        for item, j, s, a, attr, e in zip(items, judged, scores, anchor_wins, attributes, embeds)
    ]


def text_distances(pipeline, concept: str, others: list[str]) -> dict[str, float]:
    """Euclidean distance between L2-normalised pooled text embeddings of the generator's text encoder."""
    embeds = pooled_text_embeddings(pipeline, [concept, *others])
    return {o: round(float((embeds[0] - e).norm()), 4) for o, e in zip(others, embeds[1:])}


@torch.no_grad()
def summarise(records: list[ImageRecord]) -> dict:
    """Per model, per prompt set: accuracy, CLIP score, and for the erased set the CA convention."""
    summary: dict[str, dict] = {}
    for record in records:
        model = summary.setdefault(record.model, {})
        entry = model.setdefault(
            f"{record.role}:{record.concept}",
            {
                "role": record.role,
                "concept": record.concept,
                "n": 0,
                "correct": 0,
                "clip": 0.0,
                "anchor": 0,
                "anchor_n": 0,
                "judged_as": {},
            },
        )
        entry["n"] += 1
        entry["judged_as"][record.judged] = entry["judged_as"].get(record.judged, 0) + 1
        if record.attributes is not None:
            counts = entry.setdefault("attribute_counts", {})
            for name, value in record.attributes["read"].items():
                slot = counts.setdefault(name, {"read": {}, "asked": 0, "right": 0})
                slot["read"][value] = slot["read"].get(value, 0) + 1
                if record.attributes["asked"].get(name) is not None:
                    slot["asked"] += 1
                    slot["right"] += record.attributes["asked"][name] == value
        entry["correct"] += record.correct
        entry["clip"] += record.clip_score
        if record.anchor_beats_concept is not None:
            entry["anchor"] += record.anchor_beats_concept
            entry["anchor_n"] += 1
    for model in summary.values():
        for entry in model.values():
            correct = entry.pop("correct")
            entry["accuracy"] = round(correct / entry["n"], 4)
            entry["accuracy_interval95"] = wilson(correct, entry["n"])
            entry["clip_score"] = round(entry.pop("clip") / entry["n"], 3)
            anchor, anchor_n = entry.pop("anchor"), entry.pop("anchor_n")
            if anchor_n:
                entry["ablation_convention_anchor_beats_concept"] = round(anchor / anchor_n, 4)
            # what the judge reads instead, for every set (what replaces an erased concept)
            entry["judged_as"] = {
                k: round(v / entry["n"], 4) for k, v in sorted(entry["judged_as"].items(), key=lambda kv: -kv[1])
            }
            counts = entry.pop("attribute_counts", None)
            if counts is not None:
                entry["attributes"] = {
                    name: {
                        "accuracy": round(slot["right"] / slot["asked"], 4) if slot["asked"] else None,
                        "accuracy_interval95": wilson(slot["right"], slot["asked"]),
                        "read": {
                            k: round(v / entry["n"], 4) for k, v in sorted(slot["read"].items(), key=lambda kv: -kv[1])
                        },
                    }
                    for name, slot in counts.items()
                }
    return summary


def per_image_csv(records: list[ImageRecord]) -> str:
    buffer = io.StringIO()
    columns = [
        "model",
        "role",
        "concept",
        "label",
        "prompt",
        "seed",
        "judged",
        "correct",
        "clip_score",
        "anchor_beats_concept",
    ]
    # where the model's world reads attributes (the shapes world: shape, colour, style, outline)
    read = list(records[0].attributes["read"]) if records and records[0].attributes is not None else []
    writer = csv.DictWriter(buffer, fieldnames=columns + [f"read_{name}" for name in read])
    writer.writeheader()
    for record in records:
        writer.writerow(
            {
                **{c: getattr(record, c) for c in columns},
                **{f"read_{name}": record.attributes["read"][name] for name in read},
            }
        )
    return buffer.getvalue()
