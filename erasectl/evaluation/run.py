"""One fixed measurement of an erasure: the erased concept, its surroundings and its paraphrases.

Every model (the base and each erased checkpoint) draws the same prompts with the same seeds. A
CLIP judge classifies each image zero-shot among the erased concept, the surrounding concepts and
the anchor; accuracy is the share of a prompt set's images judged as what its prompts name.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict

import torch

from erasectl.distributed import world
from erasectl.errors import ConfigError
from erasectl.evaluation.intervals import add_intervals
from erasectl.evaluation.judging import ImageRecord, judge_images, summarise, text_distances
from erasectl.evaluation.nudity import count_conventions
from erasectl.evaluation.protocol import HEADLINE_RATES, SCHEMA_VERSION, EvaluationConfig, Protocol
from erasectl.evaluation.tables import build_tables, distribution_table, filter_warnings, held_out_warnings, image_drift
from erasectl.generation import generate
from erasectl.provenance import versions
from erasectl.statistics import half_width


def evaluate(
    models: list[tuple[str, Callable[[], object], dict]],
    protocol: Protocol,
    judge,
    config: EvaluationConfig,
    progress: Callable[[int, int], None] | None = None,
    attribute_reader=None,
    general_prompts: list[str] | None = None,
    side_attributes: tuple[str, ...] = (),
) -> tuple[dict, list[ImageRecord]]:
    """``models`` are ``(name, load, info)``; ``load()`` gives a pipeline (the first is the base).
    ``attribute_reader(images, prompts)``, where the model's world has one, reads every image's
    shape, colour and style beside what its prompt asked, and ``side_attributes`` names those an
    image must not gain unasked. ``general_prompts`` (captions such as COCO's) are drawn by every
    model for the distribution distance only. With ``config.target_interval``, seeds are added in
    batches that follow on from the last until every headline interval is that narrow or
    ``config.max_images`` per model are drawn (``metrics["precision"]`` says which)."""

    started = time.perf_counter()
    per_seed = sum(len(s.prompts) for s in protocol.prompt_sets())
    if config.target_interval is not None and per_seed * config.n_per_prompt > config.max_images:
        raise ConfigError(
            f"--max-images {config.max_images} is less than one round of {per_seed * config.n_per_prompt} images "
            f"({per_seed} prompts x {config.n_per_prompt} seeds); raise it or lower --n-per-prompt"
        )
    seeds, rounds = config.seeds, []
    drawn = Drawn()
    while True:
        done = len(drawn.records)
        total = done + len(models) * (per_seed * len(seeds) + (0 if rounds else len(general_prompts or [])))
        draw_and_judge(drawn, models, protocol, judge, config, seeds, lambda k, done=done, total=total: progress and progress(done + k, total),
                       attribute_reader, [] if rounds else general_prompts or [])  # fmt: skip
        metrics = _metrics(models, drawn, protocol, judge, config, side_attributes, general_prompts or [])
        rounds.append(len(seeds))
        more, stopped_by = next_seeds(metrics, config, per_seed)
        if not more:
            break
        seeds = list(range(metrics["seeds"][-1] + 1, metrics["seeds"][-1] + 1 + more))
    metrics["precision"] = {"target_interval": config.target_interval, "max_images": config.max_images,
                            "seeds_per_round": rounds, "images_per_model": per_seed * len(metrics["seeds"]), "stopped_by": stopped_by,
                            "widest": widest_interval(metrics)}  # fmt: skip
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    return metrics, drawn.records


class Drawn:
    """What the rounds of one evaluate run have drawn and judged so far."""

    def __init__(self):
        self.records: list[ImageRecord] = []
        self.general: dict[str, torch.Tensor] = {}
        self.infos: dict[str, dict] = {}
        self.distances = None


def draw_and_judge(drawn: Drawn, models, protocol, judge, config, seeds, progress, attribute_reader, general_prompts):
    """Every model draws every prompt set (and the general prompts) on ``seeds``; the judged
    images are added to ``drawn``."""
    sets = protocol.prompt_sets()
    settings = config.sampler()
    for name, load, info in models:
        pipeline = load()
        if drawn.distances is None:
            drawn.distances = text_distances(pipeline, protocol.concept, protocol.surrounding)
        drawn.infos[name] = info
        # One call per model, so that its batches can be shared among processes.
        done = len(drawn.records)
        items = generate(pipeline, [p for s in sets for p in s.prompts] + general_prompts, seeds, settings,
                         progress=lambda k, _, done=done: progress(done + k))  # fmt: skip
        if general_prompts:
            general = items[-len(general_prompts) * len(seeds) :]
            drawn.general[name] = judge.embed_images([item.image for item in general])
            items = items[: -len(general_prompts) * len(seeds)]
        for prompt_set in sets:
            count = len(prompt_set.prompts) * len(seeds)
            drawn.records += judge_images(judge, protocol, prompt_set, items[:count], name, attribute_reader)
            items = items[count:]


def headline_rates(metrics: dict) -> list[tuple[str, str, float, list[float] | None]]:
    """``(model, rate, value, interval)`` of every headline rate that carries an interval."""
    found = []
    for row in metrics["tables"]["erased_vs_surrounding"]:
        for rate in HEADLINE_RATES:
            if row.get(rate) is not None:
                found.append((row["model"], rate, row[rate], row.get(f"{rate}_interval95")))
    return found


def widest_interval(metrics: dict) -> dict | None:
    """The headline rate whose interval reaches furthest from its figure."""
    reaches = [(half_width(v, i), m, r) for m, r, v, i in headline_rates(metrics) if i is not None]
    if not reaches:
        return None
    reach, model, rate = max(reaches)
    return {"model": model, "rate": rate, "half_width": reach}


def next_seeds(metrics: dict, config: EvaluationConfig, per_seed: int) -> tuple[int, str]:
    """How many seeds the next round draws (0: stop) and what stops or drives it: the widest
    interval's reach predicts the seeds it needs (a width shrinks as one over the root of the count)."""
    if config.target_interval is None:
        return 0, "no target interval"
    widest = widest_interval(metrics)
    if widest is None or widest["half_width"] <= config.target_interval:
        return 0, "target interval reached"
    have = len(metrics["seeds"])
    room = config.max_images // per_seed - have
    if room <= 0:
        return 0, "image budget spent"
    needed = math.ceil(have * (widest["half_width"] / config.target_interval) ** 2) - have
    return min(room, max(config.n_per_prompt, needed)), "target interval"


def _metrics(models, drawn: Drawn, protocol, judge, config, side_attributes, general_prompts) -> dict:
    """metrics.json's content for the judged images (its wall time and precision are the caller's to add)."""

    records, infos = drawn.records, drawn.infos
    summary = summarise(records)
    base = models[0][0]
    tables = build_tables(summary, protocol, base, drawn.distances, infos, image_drift(records, base))
    add_intervals(tables, records, base, infos, side_attributes)
    tables["distribution"] = distribution_table(records, base, infos, drawn.general)
    filters = {name: info.get("recipe", {}).get("anchor_filter") for name, info in infos.items() if name != base}
    return {
        "schema_version": SCHEMA_VERSION,
        "versions": versions(),
        "judge": judge.name,
        "protocol": {k: v for k, v in asdict(protocol).items()},
        "config": asdict(config),
        "seeds": sorted({r.seed for r in records}),
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
