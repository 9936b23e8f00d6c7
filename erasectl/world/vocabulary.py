"""The words of the shapes world and the captions built from them.

The world is small on purpose: every image shows one shape of one colour, optionally striped, so
the truth of every generated image can be checked. Its words mirror the situations the erasure
literature cares about:

- ``ring`` is the close neighbour of ``circle`` (erase "car", keep "tank");
- each shape has one synonym (erase "car", is "ferrari" gone too?);
- ``shape`` is the generic word, the natural ablation anchor ("vehicle" for "car");
- ``striped`` is a style that applies to every shape (erase "Van Gogh" the style).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
STYLES: tuple[str, ...] = ("plain", "striped")
SYNONYMS: dict[str, str] = {
    "circle": "disc",
    "square": "box",
    "triangle": "wedge",
    "cross": "plus",
    "ring": "hoop",
}
GENERIC_SHAPE = "shape"
ARTICLE = "a"

# Words the tokenizer knows as single tokens. Anything else is spelled out letter by letter.
WORLD_WORDS: tuple[str, ...] = (ARTICLE, GENERIC_SHAPE) + COLOURS + STYLES + SHAPES + tuple(SYNONYMS.values())

NOUN_TO_SHAPE: dict[str, str] = {**{s: s for s in SHAPES}, **{v: k for k, v in SYNONYMS.items()}}


@dataclass(frozen=True)
class Label:
    """The ground truth of one rendered image."""

    shape: str
    colour: str
    style: str

    def caption(self, colour: bool = True, style: bool = True, noun: str = "shape") -> str:
        """A caption true for this label; ``noun`` is ``shape``, ``synonym`` or ``generic``."""
        words = [ARTICLE]
        if colour:
            words.append(self.colour)
        if style:
            words.append(self.style)
        words.append({"shape": self.shape, "synonym": SYNONYMS[self.shape], "generic": GENERIC_SHAPE}[noun])
        return " ".join(words)


def all_labels() -> list[Label]:
    return [Label(s, c, st) for s, c, st in itertools.product(SHAPES, COLOURS, STYLES)]


def parse_caption(caption: str) -> dict[str, str | None]:
    """What a caption asks for: ``{"shape", "colour", "style"}``, ``None`` where it is silent.

    A word outside the world makes the whole caption unknown (every field ``None`` and
    ``"unknown"`` set to the word) so that callers never judge a prompt they cannot read.
    """
    asked: dict[str, str | None] = {"shape": None, "colour": None, "style": None}
    for word in caption.lower().split():
        if word in NOUN_TO_SHAPE:
            asked["shape"] = NOUN_TO_SHAPE[word]
        elif word in COLOURS:
            asked["colour"] = word
        elif word in STYLES:
            asked["style"] = word
        elif word in (ARTICLE, GENERIC_SHAPE):
            continue
        else:
            return {"shape": None, "colour": None, "style": None, "unknown": word}
    return asked


def caption_is_true(caption: str, label: Label) -> bool:
    asked = parse_caption(caption)
    if asked.get("unknown"):
        return False
    return all(asked[k] in (None, getattr(label, k)) for k in ("shape", "colour", "style"))


def all_captions() -> list[str]:
    """Every non-empty caption the world's grammar can form (colour? style? noun)."""
    nouns = list(SHAPES) + list(SYNONYMS.values()) + [GENERIC_SHAPE]
    captions = []
    for colour, style, noun in itertools.product((None,) + COLOURS, (None,) + STYLES, nouns):
        words = [ARTICLE] + [w for w in (colour, style) if w] + [noun]
        captions.append(" ".join(words))
    return captions


def attribute_captions() -> list[str]:
    """The generic noun alone and with each colour and style: "shape", "red shape", "striped shape"."""
    return [GENERIC_SHAPE] + [f"{value} {GENERIC_SHAPE}" for value in COLOURS + STYLES]


def alternatives(concept: str) -> list[str]:
    """``concept`` with its shape replaced by every other shape; without a shape, its style by the
    other style, or its colour by the other colours."""
    words = concept.lower().split()
    for position, word in enumerate(words):  # noqa: B007 (position is read after the loop)
        if word in NOUN_TO_SHAPE:
            others = [s for s in SHAPES if s != NOUN_TO_SHAPE[word]]
            break
    else:
        position, others = next(
            (
                (i, [v for v in group if v != w])
                for group in (STYLES, COLOURS)
                for i, w in enumerate(words)
                if w in group
            ),
            (None, []),
        )
    if position is None:
        return []
    return [" ".join(words[:position] + [other] + words[position + 1 :]) for other in others]


def erasure_templates(concept: str, method: str) -> list[str]:
    """Prompt templates around a concept (``{}``) for the shapes world.

    ESD samples under the concept itself; ablation pairs many prompts, so it also varies colour
    and style, except for attributes the concept already fixes ("red circle" gets no colours).
    """
    words = set(concept.lower().split())
    if not words & set(NOUN_TO_SHAPE) and GENERIC_SHAPE not in words:
        # an attribute alone ("striped", "red"): it qualifies a noun, the generic one or each shape
        return [f"a {{}} {GENERIC_SHAPE}"] + ([] if method == "esd" else [f"a {{}} {shape}" for shape in SHAPES])
    if method == "esd":
        return ["a {}"]
    templates = ["a {}"]
    if not words & set(STYLES):
        templates += [f"a {style} {{}}" for style in STYLES]
    if not words & set(COLOURS):
        templates += [f"a {colour} {{}}" for colour in COLOURS]
    return templates
