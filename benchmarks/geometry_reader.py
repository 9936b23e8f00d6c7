"""The world judge checked by geometry: what the images behind a figure show, read from their pixels
(``erasectl.world.geometry``, which `erasectl evaluate` and `erasectl attack` also report on the
world as the ``outline`` figures) beside what the CLIP judge reads, with figures of where they
disagree.

    python benchmarks/geometry_reader.py [CHECKPOINT ...] [--attacks soft-prompt,prompt-search] [--seeds 8] [--skip-base] [--figures DIR] [--json out.json]

1. Renders (labels true by construction): the reader's confusion on 2000 images of render seed 31.
   Its thresholds were set on render seed 7, so seed 31 is its held-out check.
2. The base model's draws of "a <colour> <shape>" for every shape and colour, seeds 0-7: how often
   each reader agrees with the prompt (so a disagreement later is the erased model's, or a reader's).
3. For each erased checkpoint, each attack as `erasectl attack` runs it (its defaults, judged on
   seeds 0-7): the share of the attack's images the CLIP judge reads as the concept (the reported
   attack success), the share the geometry reads as the concept, and what the geometry reads in
   the images the judge counted. The same for the plain prompts, and for the held-out neighbours
   (the protocol's surrounding concepts), base and erased, as each reader reads them.

A diagnostic for issue 16: by eye, most of the learned token's "circles" on AdvUnlearn's circle
checkpoint were crosses with rounded arms.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def confusion(truth: list[str], read: list[str]) -> dict[str, dict[str, float]]:
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for t, r in zip(truth, read):
        table[t][r] += 1
    return {t: {r: round(n / sum(c.values()), 4) for r, n in sorted(c.items())} for t, c in sorted(table.items())}


def save_figure(path: Path, images: list, readings: list[dict], counted: list[bool], concept: str) -> None:
    """The images the judge counts as ``concept``, one row per geometric reading, then those only
    the geometry counts."""
    from erasectl.world.geometry import shows

    groups: dict[str, list] = collections.defaultdict(list)
    for image, reading, hit in zip(images, readings, counted):
        if hit:
            groups[f"judge: {concept}; geometry: {reading['colour']} {reading['shape']}"].append(image)
        elif shows(reading, concept):
            groups[f"geometry only: {reading['colour']} {reading['shape']}"].append(image)
    save_groups(path, groups)


def save_groups(path: Path, groups: dict[str, list]) -> None:
    """One grid: a row of images per label (none where there is no group)."""
    from erasectl.grids import labelled_grid

    if groups:
        path.parent.mkdir(parents=True, exist_ok=True)
        labelled_grid(list(groups.values()), list(groups), cell=64).save(path)


def neighbours(pipeline, protocol, judge, seeds: list[int], figure: Path | None = None) -> dict:
    """The share of the protocol's surrounding images (every neighbour, colour templates, ``seeds``)
    that each reader reads as the neighbour prompted, overall and per neighbour; ``figure``: a grid
    of each neighbour the readers disagree on by 10 points or more, one row per pair of readings."""
    from erasectl.generation import SamplerSettings, generate
    from erasectl.world.geometry import read_geometry, shows
    from erasectl.world.judging import WORLD_BATCH_SIZE

    candidates = [protocol.judge_template.format(c) for c in protocol.candidates]
    found: dict[str, dict[str, float]] = {}
    for prompt_set in (s for s in protocol.prompt_sets() if s.role == "surrounding"):
        images = [
            item.image
            for item in generate(pipeline, prompt_set.prompts, seeds, SamplerSettings(batch_size=WORLD_BATCH_SIZE))
        ]
        judged = judge.classify(judge.embed_images(images), candidates).tolist()
        readings = [read_geometry(image) for image in images]
        found[prompt_set.label] = {
            "judge": round(sum(protocol.candidates[j] == prompt_set.label for j in judged) / len(images), 4),
            "geometry": round(sum(shows(r, prompt_set.label) for r in readings) / len(images), 4),
        }
        if figure is not None and abs(found[prompt_set.label]["judge"] - found[prompt_set.label]["geometry"]) >= 0.1:
            groups: dict[str, list] = collections.defaultdict(list)
            for image, j, r in zip(images, judged, readings):
                groups[f"judge: {protocol.candidates[j]}; geometry: {r['shape']}"].append(image)
            save_groups(figure.with_name(f"{figure.stem}-{prompt_set.label.replace(' ', '_')}.png"), groups)
    return {
        reader: round(sum(v[reader] for v in found.values()) / len(found), 4) for reader in ("judge", "geometry")
    } | {"per_neighbour": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="erased checkpoints; the concept is the recipe's first")
    parser.add_argument("--attacks", default="soft-prompt,prompt-search")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--skip-base", action="store_true", help="leave out parts 1 and 2")
    parser.add_argument(
        "--figures",
        default=None,
        help="a folder for one grid per checkpoint and attack: the attack images the judge counts as the concept, one row per geometric reading, and those only the geometry counts",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from erasectl.attacks import AttackConfig, run_attack
    from erasectl.checkpoint import ErasedCheckpoint, model_loaders
    from erasectl.evaluation.protocol import protocol_for
    from erasectl.generation import SamplerSettings, generate
    from erasectl.judge import ClipJudge
    from erasectl.models import load_pipeline, model_profile
    from erasectl.provenance import versions
    from erasectl.world.geometry import read_geometry
    from erasectl.world.judging import WORLD_BATCH_SIZE, read_attributes
    from erasectl.world.render import render_dataset
    from erasectl.world.vocabulary import COLOURS, SHAPES

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results: dict = {"seeds": [seeds[0], seeds[-1]], "versions": versions()}
    judge = ClipJudge.load()
    if not args.skip_base:
        images, labels = render_dataset(2000, seed=31)
        read = [read_geometry(image) for image in images]
        results["renders"] = {
            "images": len(labels),
            "render_seed": 31,
            "shape_accuracy": round(sum(r["shape"] == label.shape for r, label in zip(read, labels)) / len(labels), 4),
            "colour_accuracy": round(
                sum(r["colour"] == label.colour for r, label in zip(read, labels)) / len(labels), 4
            ),
            "confusion": confusion([label.shape for label in labels], [r["shape"] for r in read]),
        }
        print("renders", json.dumps(results["renders"]), flush=True)
        base = load_pipeline()
        base.set_progress_bar_config(disable=True)
        prompts = [(shape, f"a {colour} {shape}") for shape in SHAPES for colour in COLOURS]
        items = generate(base, [p for _, p in prompts], seeds, SamplerSettings(batch_size=WORLD_BATCH_SIZE))
        truth = [shape for shape, _ in prompts for _ in seeds]
        geometry = [read_geometry(item.image)["shape"] for item in items]
        clip = [r["shape"] for r in read_attributes(judge, [item.image for item in items])]
        results["base_draws"] = {
            "images": len(items),
            "geometry_agrees_with_prompt": round(sum(g == t for g, t in zip(geometry, truth)) / len(truth), 4),
            "judge_agrees_with_prompt": round(sum(c == t for c, t in zip(clip, truth)) / len(truth), 4),
            "readers_agree": round(sum(g == c for g, c in zip(geometry, clip)) / len(truth), 4),
            "geometry_confusion": confusion(truth, geometry),
            "judge_confusion": confusion(truth, clip),
        }
        print("base draws", json.dumps(results["base_draws"]), flush=True)

    results["checkpoints"] = {}
    for path in args.checkpoints:
        erased = ErasedCheckpoint.load(Path(path))
        concept = erased.recipe["concepts"][0]
        profile = model_profile(erased.base_model, erased.base_config)
        protocol = protocol_for(profile, concept, None, [], None, None)
        pipeline = load_pipeline(erased.base_model, config=erased.base_config)
        pipeline.set_progress_bar_config(disable=True)
        (_, load_base, _), (_, load_erased, _) = model_loaders(pipeline, erased.base_model, [erased])
        rows = {}
        for attack in args.attacks.split(","):
            summary, drawn = run_attack(
                load_base,
                load_erased,
                concept,
                protocol,
                judge,
                attack,
                AttackConfig(),
                seeds,
                SamplerSettings(batch_size=WORLD_BATCH_SIZE),
                profile,
            )
            row = {
                "method": erased.recipe["method"],
                "concept": concept,
                "attack_success_judge": summary["attack_success"],
                "erased_plain_judge": summary["erased_plain_accuracy"],
                "erased_geometry": summary["erased_plain_outline"],
                "attack_geometry": summary["attack_success_outline"],
            }
            for part in ("erased", "attack"):
                images = [item.image for item in drawn[part]]
                readings = [read_geometry(image) for image in images]
                judged = judge.classify(
                    judge.embed_images(images), [protocol.judge_template.format(c) for c in protocol.candidates]
                ).tolist()
                counted = [r for r, j in zip(readings, judged) if protocol.candidates[j] == concept]
                if part == "attack" and args.figures:
                    save_figure(
                        Path(args.figures) / f"{Path(path).parent.name}-{attack}.png",
                        images,
                        readings,
                        [protocol.candidates[j] == concept for j in judged],
                        concept,
                    )
                row[f"{part}_judge_counted_read_as"] = dict(collections.Counter(r["shape"] for r in counted))
            row["prompts"] = summary["prompts"][:1]
            rows[attack] = row
            print(path, attack, json.dumps(row), flush=True)
        figure = Path(args.figures) / f"{Path(path).parent.name}-neighbours.png" if args.figures else None
        rows["neighbours"] = {
            "base": neighbours(load_base(), protocol, judge, seeds),
            "erased": neighbours(load_erased(), protocol, judge, seeds, figure),
        }
        print(path, "neighbours", json.dumps(rows["neighbours"]), flush=True)
        results["checkpoints"][
            f"{concept} / {erased.recipe['method']} / erase seed {erased.recipe['config'].get('seed')}"
        ] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
