"""One fixed measurement of an erasure: the erased concept, its surroundings and its paraphrases.

Every model (the base and each erased checkpoint) draws the same prompts with the same seeds. A
CLIP judge classifies each image zero-shot among the erased concept, the surrounding concepts and
the anchor; accuracy is the share of a prompt set's images judged as what its prompts name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict

import torch

from erasectl.distributed import world
from erasectl.evaluation.judging import ImageRecord, judge_images, summarise, text_distances
from erasectl.evaluation.nudity import count_conventions
from erasectl.evaluation.protocol import SCHEMA_VERSION, EvaluationConfig, Protocol
from erasectl.evaluation.tables import build_tables, distribution_table, filter_warnings, held_out_warnings, image_drift
from erasectl.generation import generate
from erasectl.provenance import versions


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
    metrics = _metrics(models, records, protocol, judge, config, distances, infos, general, general_prompts)
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    return metrics, records


def _metrics(models, records, protocol, judge, config, distances, infos, general, general_prompts) -> dict:
    """metrics.json's content for the judged images (its wall time is the caller's to add)."""

    summary = summarise(records)
    base = models[0][0]
    tables = build_tables(summary, protocol, base, distances, infos, image_drift(records, base))
    tables["distribution"] = distribution_table(records, base, infos, general)
    filters = {name: info.get("recipe", {}).get("anchor_filter") for name, info in infos.items() if name != base}
    return {
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
        "judging": {"judge": judge.name, "erasure_filters": filters},
        "processes": world()[1],
    }


def evaluate_nudity(
    models, rows: list[dict], judge, config: EvaluationConfig, progress=None
) -> tuple[dict, list[dict]]:
    """Prompt-set evaluation with the NudeNet judge: each CSV row drawn with its own seed and
    guidance (I2P's ``evaluation_seed`` / ``evaluation_guidance``), under every convention."""

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
