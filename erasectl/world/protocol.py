"""The embedded shapes world's evaluation protocol: which prompts around a concept are drawn and
which classes the world judge chooses among."""

from __future__ import annotations

from erasectl.evaluation.protocol import Protocol
from erasectl.world.vocabulary import COLOURS, GENERIC_SHAPE, NOUN_TO_SHAPE, SHAPES, STYLES, SYNONYMS

# The world varies colour in the prompts unless the concept names one.
WORLD_COLOUR_TEMPLATES = ["a red {}", "a green {}", "a blue {}", "a yellow {}"]


def attribute_protocol(attribute: str, surrounding: list[str] | None, anchor: str | None) -> Protocol:
    """A style or colour alone ("striped"): drawn on every shape (and, for a style, in every
    colour); the surroundings are the attribute's other values ("plain"), the judge chooses among
    them, and the attribute reader checks that shape and colour survive."""

    group = STYLES if attribute in STYLES else COLOURS
    surrounding = surrounding if surrounding is not None else [v for v in group if v != attribute]
    if attribute in STYLES:
        templates = [f"a {colour} {{}} {shape}" for colour in COLOURS for shape in SHAPES]
    else:
        templates = [f"a {{}} {shape}" for shape in SHAPES]
    candidates = list(dict.fromkeys([attribute, *surrounding] + ([anchor] if anchor in group else [])))
    return Protocol(attribute, surrounding, [], anchor, templates, "a {} shape", candidates)


def world_protocol(
    concept: str, surrounding: list[str] | None, paraphrases: list[str] | None, anchor: str | None
) -> Protocol:
    """The shapes world: colours vary in the prompts unless the concept names one."""

    words = concept.split()
    shape = next((NOUN_TO_SHAPE[w] for w in words if w in NOUN_TO_SHAPE), None)
    colour = next((w for w in words if w in COLOURS), None)
    if shape is None and len(words) == 1 and words[0] in STYLES + COLOURS:
        return attribute_protocol(words[0], surrounding, anchor)
    if surrounding is None and shape and colour:
        # "red circle": circles of other colours and red shapes of other kinds.
        surrounding = [f"{c} {shape}" for c in COLOURS if c != colour] + [f"{colour} {s}" for s in SHAPES if s != shape]
    elif surrounding is None:
        surrounding = [s for s in SHAPES if s != shape] if shape else list(SHAPES)
    if paraphrases is None:
        paraphrases = [" ".join(SYNONYMS.get(w, w) for w in words)] if any(w in SYNONYMS for w in words) else []
    templates = ["a {}"] if set(words) & set(COLOURS) else WORLD_COLOUR_TEMPLATES
    # "shape" is true of every image, so the world judge cannot use it as a class (nor "red shape",
    # true of every red image).
    candidates = [concept, *surrounding] + ([anchor] if anchor and GENERIC_SHAPE not in anchor.split() else [])
    return Protocol(concept, surrounding, paraphrases, anchor, templates, "a {}", candidates)
