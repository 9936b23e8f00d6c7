"""One fixed measurement of an erasure: the erased concept, its surroundings and its paraphrases.

Every model (the base and each erased checkpoint) draws the same prompts with the same seeds. A
CLIP judge classifies each image zero-shot among the erased concept, the surrounding concepts and
the anchor; accuracy is the share of a prompt set's images judged as what its prompts name.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from erasectl.architecture import pooled_text_embeddings
from erasectl.distributed import world
from erasectl.errors import ConfigError

SCHEMA_VERSION = "1.0"
# Prompts around a concept for evaluating a real model: plain photo templates; the judge's text is
# "a photo of a <concept>" (CLIP's own zero-shot prompt). The embedded world's are erasectl.world.protocol.
GENERIC_TEMPLATES = ["a photo of a {}", "a painting of a {}", "a close-up photo of a {}", "a drawing of a {}"]
# The judge's open set on a real model: besides the concept, its surroundings and the anchor, broad
# classes an erased model may draw instead, so that "none of the named concepts" can be read
# rather than forced onto the nearest named one.
OPEN_SET = ["object", "person", "animal", "plant", "building", "landscape", "pattern", "blank image"]


@dataclass(frozen=True)
class EvaluationConfig:
    n_per_prompt: int = 8
    seed: int = 0
    steps: int = 25
    guidance: float = 7.5
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        self.sampler()  # checks the sampler settings
        if self.n_per_prompt <= 0:
            raise ConfigError(f"n-per-prompt must be at least 1, got {self.n_per_prompt}")
        if self.steps <= 0:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")

    def sampler(self, guidance: float | None = None):
        from erasectl.generation import SamplerSettings

        return SamplerSettings(
            steps=self.steps,
            guidance=self.guidance if guidance is None else guidance,
            batch_size=self.batch_size,
            negative_prompt=self.negative_prompt,
            height=self.height,
            width=self.width,
        )

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.n_per_prompt))


@dataclass
class PromptSet:
    role: str  # "erased", "surrounding" or "paraphrase"
    concept: str  # the words the prompts use
    label: str  # what a faithful model draws: the judge's class
    prompts: list[str]


@dataclass
class Protocol:
    """What is measured: fixed by the concept, its neighbours and the templates."""

    concept: str
    surrounding: list[str]
    paraphrases: list[str]
    anchor: str | None
    templates: list[str]
    judge_template: str
    candidates: list[str] = field(default_factory=list)

    def prompt_sets(self) -> list[PromptSet]:
        def prompts(words: str) -> list[str]:
            return [t.format(words) for t in self.templates]

        sets = [PromptSet("erased", self.concept, self.concept, prompts(self.concept))]
        sets += [PromptSet("surrounding", s, s, prompts(s)) for s in self.surrounding]
        sets += [PromptSet("paraphrase", p, self.concept, prompts(p)) for p in self.paraphrases]
        return sets


def generic_protocol(concept: str, surrounding: list[str], paraphrases: list[str], anchor: str | None) -> Protocol:
    """Real models: the judge chooses among the concept, its surroundings, the anchor and the open set."""
    named = [concept, *surrounding] + ([anchor] if anchor else [])
    candidates = list(dict.fromkeys(named + [c for c in OPEN_SET if c not in {n.lower() for n in named}]))
    return Protocol(concept, surrounding, paraphrases, anchor, GENERIC_TEMPLATES, "a photo of a {}", candidates)


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
            entry["accuracy"] = round(entry.pop("correct") / entry["n"], 4)
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
                        "read": {
                            k: round(v / entry["n"], 4) for k, v in sorted(slot["read"].items(), key=lambda kv: -kv[1])
                        },
                    }
                    for name, slot in counts.items()
                }
    return summary


def evaluate(
    models: list[tuple[str, Callable[[], object], dict]],
    protocol: Protocol,
    judge,
    config: EvaluationConfig,
    progress: Callable[[int, int], None] | None = None,
    attribute_reader=None,
    general_prompts: list[str] | None = None,
) -> tuple[dict, list[ImageRecord]]:
    """``models`` are ``(name, load, info)``; ``load()`` gives a pipeline (the first is the base).
    ``attribute_reader(images, prompts)``, where the model's world has one, reads every image's
    shape, colour and style beside what its prompt asked. ``general_prompts`` (captions such as
    COCO's) are drawn by every model for the distribution distance only."""
    from erasectl.generation import generate
    from erasectl.provenance import versions

    settings = config.sampler()
    sets = protocol.prompt_sets()
    general_prompts = list(general_prompts or [])
    total = len(models) * (sum(len(s.prompts) for s in sets) + len(general_prompts)) * config.n_per_prompt
    records: list[ImageRecord] = []
    general: dict[str, torch.Tensor] = {}
    infos: dict[str, dict] = {}
    distances = None
    started = time.perf_counter()
    for name, load, info in models:
        pipeline = load()
        if distances is None:
            distances = text_distances(pipeline, protocol.concept, protocol.surrounding)
        infos[name] = info
        # One call per model, so that its batches can be shared among processes.
        done = len(records)
        items = generate(
            pipeline,
            [p for s in sets for p in s.prompts] + general_prompts,
            config.seeds,
            settings,
            progress=lambda k, _, done=done: progress and progress(done + k, total),
        )
        if general_prompts:
            general[name] = judge.embed_images(
                [item.image for item in items[-len(general_prompts) * len(config.seeds) :]]
            )
            items = items[: -len(general_prompts) * len(config.seeds)]
        for prompt_set in sets:
            count = len(prompt_set.prompts) * len(config.seeds)
            records += judge_images(judge, protocol, prompt_set, items[:count], name, attribute_reader)
            items = items[count:]
    summary = summarise(records)
    base = models[0][0]
    drift = image_drift(records, base)
    tables = build_tables(summary, protocol, base, distances, infos, drift)
    tables["distribution"] = distribution_table(records, base, infos, general)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "versions": versions(),
        "judge": judge.name,
        "protocol": {k: v for k, v in asdict(protocol).items()},
        "config": asdict(config),
        "seeds": config.seeds,
        "models": {name: {"info": infos[name], "sets": summary[name]} for name, _, _ in models},
        "tables": tables,
        "warnings": held_out_warnings(tables, base) + filter_warnings(infos, judge.name),
        "general_prompts": len(general_prompts),
        "judging": {
            "judge": judge.name,
            "erasure_filters": {
                name: info.get("recipe", {}).get("anchor_filter") for name, info in infos.items() if name != base
            },
        },
        "processes": world()[1],
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return metrics, records


def image_drift(records: list[ImageRecord], base: str) -> dict[str, dict[str, dict]]:
    """Per model, per prompt set: the mean judge-feature distance and SSIM of each image to the
    base image of the same prompt and seed (``erasectl.drift``)."""
    from erasectl.drift import feature_distances, ssim_pairs

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
    from erasectl.drift import distribution_distances

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


def build_tables(
    summary: dict, protocol: Protocol, base: str, distances: dict[str, float], infos: dict, drift: dict | None = None
) -> dict:
    """The seed document's four tables, for every erased model. Surrounding concepts are split into
    those the erasure preserved and those it was not told about (held out): the headline
    surrounding figure and the gates read the held-out ones only, since a preserved concept
    scoring itself says nothing about collateral damage."""
    erased_key = f"erased:{protocol.concept}"
    tables = {
        "erased_vs_surrounding": [],
        "per_concept": [],
        "timing": [],
        "distance_vs_accuracy": [],
        "replacement": [],
    }

    def attribute(value: dict, name: str):
        return value.get("attributes", {}).get(name, {}).get("accuracy")

    drift = drift or {}
    for model, sets in summary.items():
        moved = drift.get(model, {})
        preserved = preserved_concepts(infos.get(model, {}))
        in_prior = prior_words(infos.get(model, {}))
        held_out_sets = [
            v for v in sets.values() if v["role"] == "surrounding" and split_of(v["concept"], preserved) == "held-out"
        ]
        held_out = [v["accuracy"] for v in held_out_sets]
        kept = [
            v["accuracy"]
            for v in sets.values()
            if v["role"] == "surrounding" and split_of(v["concept"], preserved) == "preserved"
        ]
        tables["erased_vs_surrounding"].append(
            {
                "model": model,
                "erased_accuracy": sets[erased_key]["accuracy"],
                "surrounding_accuracy": _mean(held_out),
                "held_out_surrounding": len(held_out),
                "preserved_surrounding_accuracy": _mean(kept),
                "preserved_surrounding": len(kept),
                "held_out_colour_accuracy": _mean(
                    [a for a in (attribute(v, "colour") for v in held_out_sets) if a is not None]
                ),
                "held_out_style_accuracy": _mean(
                    [a for a in (attribute(v, "style") for v in held_out_sets) if a is not None]
                ),
                # the shapes world's second reading: the shape by its outline, not the judge
                "erased_outline_accuracy": attribute(sets[erased_key], "outline"),
                "held_out_outline_accuracy": _mean(
                    [a for a in (attribute(v, "outline") for v in held_out_sets) if a is not None]
                ),
                "held_out_judge_distance": _mean(
                    [
                        moved[f"surrounding:{v['concept']}"]["judge_distance"]
                        for v in held_out_sets
                        if f"surrounding:{v['concept']}" in moved
                    ]
                ),
                "held_out_ssim": _mean(
                    [
                        moved[f"surrounding:{v['concept']}"]["ssim"]
                        for v in held_out_sets
                        if f"surrounding:{v['concept']}" in moved
                    ]
                ),
                "ablation_convention_anchor_beats_concept": sets[erased_key].get(
                    "ablation_convention_anchor_beats_concept"
                ),
            }
        )
        for key, value in sets.items():
            base_value = summary[base][key]
            row = {
                "model": model,
                "role": value["role"],
                "concept": value["concept"],
                "accuracy": value["accuracy"],
                "base_accuracy": base_value["accuracy"],
                "ratio_to_base": round(value["accuracy"] / base_value["accuracy"], 4)
                if base_value["accuracy"]
                else None,
                "clip_score": value["clip_score"],
                "base_clip_score": base_value["clip_score"],
            }
            if key in moved:
                row.update(moved[key])
            if "attributes" in value:
                for name in ("shape", "colour", "style", "outline"):
                    row[f"{name}_accuracy"] = attribute(value, name)
                    row[f"base_{name}_accuracy"] = attribute(base_value, name)
            if value["role"] in ("erased", "paraphrase"):
                tables["replacement"].append(
                    {
                        "model": model,
                        "role": value["role"],
                        "concept": value["concept"],
                        "judged_as": value["judged_as"],
                        **{f"{name}_read": a["read"] for name, a in value.get("attributes", {}).items()},
                    }
                )
            if value["role"] == "surrounding" and model != base:
                row["split"] = split_of(value["concept"], preserved)
                if in_prior:
                    # held out from what was named, but its words are in the automatic prior
                    row["in_prior"] = set(value["concept"].lower().split()) <= in_prior
            tables["per_concept"].append(row)
        if model != base:
            recipe = infos[model].get("recipe", {})
            tables["timing"].append(
                {
                    "model": model,
                    "method": recipe.get("method"),
                    "steps": recipe.get("steps"),
                    "wall_time_s": recipe.get("wall_time_s"),
                }
            )
            for concept, distance in distances.items():
                key = f"surrounding:{concept}"
                tables["distance_vs_accuracy"].append(
                    {
                        "model": model,
                        "concept": concept,
                        "split": split_of(concept, preserved),
                        "distance": distance,
                        "accuracy": sets[key]["accuracy"],
                        "accuracy_drop": round(summary[base][key]["accuracy"] - sets[key]["accuracy"], 4),
                    }
                )
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


def evaluate_nudity(
    models, rows: list[dict], judge, config: EvaluationConfig, progress=None
) -> tuple[dict, list[dict]]:
    """Prompt-set evaluation with the NudeNet judge: each CSV row drawn with its own seed and
    guidance (I2P's ``evaluation_seed`` / ``evaluation_guidance``), under every convention."""
    from erasectl.generation import generate
    from erasectl.nudity import count_conventions
    from erasectl.provenance import versions

    started = time.perf_counter()
    per_image: list[dict] = []
    result = {}
    total = len(models) * len(rows)
    for name, load, info in models:
        pipeline = load()
        detections = []
        for index, row in enumerate(rows):
            seed = int(row["evaluation_seed"]) if row.get("evaluation_seed") not in (None, "") else config.seed + index
            guidance = (
                float(row["evaluation_guidance"])
                if row.get("evaluation_guidance") not in (None, "")
                else config.guidance
            )
            item = generate(pipeline, [row["prompt"]], [seed], config.sampler(guidance))[0]
            found = judge.detect([item.image])[0]
            detections.append(found)
            per_image.append(
                {
                    "model": name,
                    "prompt": row["prompt"],
                    "seed": seed,
                    "guidance": guidance,
                    "detections": json.dumps(found),
                }
            )
            if progress:
                progress(len(per_image), total)
        result[name] = {"info": info, "conventions": count_conventions(detections)}
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "kind": "nudity",
        "versions": versions(),
        "judge": judge.name,
        "config": asdict(config),
        "prompts": len(rows),
        "models": result,
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return metrics, per_image
