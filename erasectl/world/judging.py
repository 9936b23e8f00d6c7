"""Reading shapes-world images with a CLIP judge: which shape, colour and style each one shows."""

from __future__ import annotations

from erasectl.world.vocabulary import COLOURS, SHAPES, STYLES

SHAPE_CANDIDATES = [f"a {shape}" for shape in SHAPES]
COLOUR_CANDIDATES = [f"a {colour} shape" for colour in COLOURS]
STYLE_CANDIDATES = [f"a {style} shape" for style in STYLES]


def read_attributes(judge, images: list) -> list[dict[str, str]]:
    """For each image ``{"shape", "colour", "style"}`` as the judge sees it."""
    embeds = judge.embed_images(images)
    shapes = judge.classify(embeds, SHAPE_CANDIDATES).tolist()
    colours = judge.classify(embeds, COLOUR_CANDIDATES).tolist()
    styles = judge.classify(embeds, STYLE_CANDIDATES).tolist()
    return [
        {"shape": SHAPES[s], "colour": COLOURS[c], "style": STYLES[t]} for s, c, t in zip(shapes, colours, styles)
    ]
