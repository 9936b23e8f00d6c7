"""Reading shapes-world images with a CLIP judge: which shape, colour and style each one shows."""

from __future__ import annotations

from erasectl.architecture import sampling_defaults
from erasectl.generation import SamplerSettings, generate
from erasectl.world.geometry import read_geometry
from erasectl.world.vocabulary import COLOURS, NOUN_TO_SHAPE, SHAPES, STYLES, parse_caption

SHAPE_CANDIDATES = [f"a {shape}" for shape in SHAPES]
COLOUR_CANDIDATES = [f"a {colour} shape" for colour in COLOURS]
STYLE_CANDIDATES = [f"a {style} shape" for style in STYLES]
WORLD_BATCH_SIZE = 64  # 32x32 images: one pipeline call draws 64


def read_attributes(judge, images: list) -> list[dict[str, str]]:
    """For each image ``{"shape", "colour", "style"}`` as the judge sees it."""
    embeds = judge.embed_images(images)
    shapes = judge.classify(embeds, SHAPE_CANDIDATES).tolist()
    colours = judge.classify(embeds, COLOUR_CANDIDATES).tolist()
    styles = judge.classify(embeds, STYLE_CANDIDATES).tolist()
    return [{"shape": SHAPES[s], "colour": COLOURS[c], "style": STYLES[t]} for s, c, t in zip(shapes, colours, styles)]


def attribute_reader(judge):
    """For evaluate: each image's shape, colour and style as the world judge reads them, and its
    shape by outline (``erasectl.world.geometry``, "unclear" where no rule holds), with what its
    prompt asked for (``None`` where the prompt is silent)."""

    def read(images: list, prompts: list[str]) -> list[dict]:
        rows = []
        for image, found, prompt in zip(images, read_attributes(judge, images), prompts):
            asked = parse_caption(prompt)
            rows.append(
                {
                    "read": {**found, "outline": read_geometry(image)["shape"]},
                    "asked": {**{k: asked.get(k) for k in ("shape", "colour", "style")}, "outline": asked.get("shape")},
                }
            )
        return rows

    return read


def shape_report(
    pipeline,
    judge,
    seeds: list[int],
    steps: int | None = None,
    guidance: float | None = None,
    nouns: dict[str, str] | None = None,
) -> dict:
    """Generate ``a <colour> <noun>`` for every colour and shape (with the model's own steps and
    guidance unless given) and read them back.

    ``nouns`` maps each shape to the word used in its prompts (default: the shape itself; pass
    ``SYNONYMS`` for paraphrases). Returns per shape the share judged as that shape, the share
    with the prompted colour, and the share judged as each shape.
    """

    steps, guidance = sampling_defaults(pipeline, steps, guidance)
    nouns = nouns or {shape: shape for shape in SHAPES}
    prompts = [(shape, colour, f"a {colour} {nouns[shape]}") for shape in SHAPES for colour in COLOURS]
    items = generate(
        pipeline,
        [p for _, _, p in prompts],
        seeds,
        SamplerSettings(steps=steps, guidance=guidance, batch_size=WORLD_BATCH_SIZE),
    )
    read = read_attributes(judge, [item.image for item in items])
    report: dict[str, dict] = {}
    for shape in SHAPES:
        rows = [r for (s, c, _), chunk in zip(prompts, _chunks(read, len(seeds))) if s == shape for r in chunk]
        colours = [c for (s, c, _) in prompts if s == shape for _ in seeds]
        report[shape] = {
            "accuracy": sum(r["shape"] == shape for r in rows) / len(rows),
            "colour_accuracy": sum(r["colour"] == c for r, c in zip(rows, colours)) / len(rows),
            "judged_as": {other: sum(r["shape"] == other for r in rows) / len(rows) for other in SHAPES},
            "n": len(rows),
        }
    return report


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def anchor_filter(pipeline, judge, concepts: list[str]):
    """For ablation on the shapes world: drop anchor images the judge reads as an erased concept.

    "a red shape" draws circles a fifth of the time; mapping "circle" onto those would teach the
    model to keep drawing circles. The paper's anchor captions have the same flaw, less visibly.
    """
    import torch

    wanted = []
    for concept in concepts:
        words = concept.lower().split()
        wanted.append(
            {
                "shape": next((NOUN_TO_SHAPE[w] for w in words if w in NOUN_TO_SHAPE), None),
                "colour": next((w for w in words if w in COLOURS), None),
                "style": next((w for w in words if w in STYLES), None),
            }
        )

    @torch.no_grad()
    def keep(latents: torch.Tensor) -> torch.Tensor:
        decoded = pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor).sample
        images = pipeline.image_processor.postprocess(decoded, output_type="pil")
        read = read_attributes(judge, images)
        shows = [any(all(v is None or r[k] == v for k, v in w.items()) for w in wanted) for r in read]
        return torch.tensor([not s for s in shows])

    keep.judge_name = judge.name  # recorded in the recipe, so that evaluate can tell a filter from its own judge
    return keep
