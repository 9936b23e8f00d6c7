"""Measure the embedded shapes world: judge accuracy, generation accuracy, size, load and sample speed.

    python benchmarks/world_quality.py [--model shapes-unet|shapes-mmdit] [--seeds 8] [--json out.json]

Prints one table and, with --json, writes the figures. Targets (issue 2): judge on held-out renders
shape >= 97%, colour >= 99%, style >= 95%; generated colour x shape prompts (8 seeds, the model's
own sampler, steps and guidance: 25 DDIM steps for the UNet, 28 flow-matching steps for the
MMDiT) shape >= 90%, colour >= 98%; synonym and style prompts >= 85% each; weights <= 12 MB (the
UNet model and the judge; issue 37: both models and the judge <= 25 MB); load < 2 s; <= 0.2 s per
image batched on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-unet", choices=["shapes-unet", "shapes-mmdit"])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--held-out", type=int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch
    from PIL import Image

    from erasectl.architecture import sampling_defaults
    from erasectl.assets import assets_dir, embedded_judge_dir, embedded_pipeline_dir
    from erasectl.generation import SamplerSettings, generate
    from erasectl.judge import ClipJudge
    from erasectl.models import load_pipeline
    from erasectl.provenance import versions
    from erasectl.world.judging import read_attributes
    from erasectl.world.render import render_dataset
    from erasectl.world.vocabulary import COLOURS, SHAPES, SYNONYMS

    figures: dict[str, object] = {"model": args.model, "torch_threads": torch.get_num_threads(), "versions": versions()}

    def megabytes(*folders) -> float:
        return round(sum(p.stat().st_size for d in folders for p in d.rglob("*") if p.is_file()) / 2**20, 2)

    figures["weights_mb"] = megabytes(embedded_pipeline_dir(args.model), embedded_judge_dir())
    figures["all_embedded_weights_mb"] = megabytes(assets_dir())

    judge = ClipJudge.load()
    images, labels = render_dataset(args.held_out, seed=999)
    read = read_attributes(judge, [Image.fromarray(a) for a in images])
    for attribute in ("shape", "colour", "style"):
        figures[f"judge_{attribute}_accuracy"] = float(
            np.mean([r[attribute] == getattr(label, attribute) for r, label in zip(read, labels)])
        )

    started = time.perf_counter()
    pipeline = load_pipeline(args.model)
    figures["load_s"] = round(time.perf_counter() - started, 3)
    seeds = list(range(args.seeds))
    steps, guidance = sampling_defaults(pipeline)
    figures["sampler"] = {"class": type(pipeline.scheduler).__name__, "steps": steps, "guidance": guidance}
    settings = SamplerSettings(steps=steps, guidance=guidance, batch_size=64)
    generate(pipeline, ["a red circle"], seeds=[0], settings=settings)  # warm-up

    def judged(prompts: list[str], truths: list[dict[str, str]]) -> tuple[dict[str, float], float]:
        started = time.perf_counter()
        items = generate(pipeline, prompts, seeds, settings)
        seconds = (time.perf_counter() - started) / len(items)
        attributes = read_attributes(judge, [i.image for i in items])
        expected = [truth for truth in truths for _ in seeds]
        rates = {key: float(np.mean([a[key] == e[key] for a, e in zip(attributes, expected)])) for key in expected[0]}
        return rates, seconds

    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    rates, per_image = judged([f"a {c} {s}" for c, s in pairs], [{"shape": s, "colour": c} for c, s in pairs])
    figures["generated_shape_accuracy"] = rates["shape"]
    figures["generated_colour_accuracy"] = rates["colour"]
    figures["seconds_per_image"] = round(per_image, 4)
    rates, _ = judged([f"a {c} {SYNONYMS[s]}" for c, s in pairs], [{"shape": s, "colour": c} for c, s in pairs])
    figures["synonym_shape_accuracy"] = rates["shape"]
    figures["synonym_colour_accuracy"] = rates["colour"]
    styled = [(c, st, s) for c in COLOURS for st in ("striped", "plain") for s in SHAPES]
    rates, _ = judged([f"a {c} {st} {s}" for c, st, s in styled], [{"style": st, "shape": s} for c, st, s in styled])
    figures["style_accuracy"] = rates["style"]
    figures["style_prompt_shape_accuracy"] = rates["shape"]
    figures["n_images_per_prompt_set"] = {"colour_x_shape": len(pairs) * len(seeds), "style": len(styled) * len(seeds)}

    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
