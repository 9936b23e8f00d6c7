"""The embedded shapes world's policies, in one place: its vocabulary check, erasure templates,
default preservation, anchor filter and method defaults (its evaluation protocol is
``erasectl.world.protocol``)."""

from __future__ import annotations

from erasectl.errors import UserError
from erasectl.judge import ClipJudge
from erasectl.profiles import SHAPES_WORLD, SHAPES_WORLD_MMDIT, PaperProfile
from erasectl.world.defaults import MMDIT_DEFAULTS, WORLD_DEFAULTS, for_several_concepts
from erasectl.world.geometry import outlined, read_geometry, shows
from erasectl.world.judging import WORLD_BATCH_SIZE, anchor_filter, attribute_reader
from erasectl.world.protocol import world_protocol
from erasectl.world.vocabulary import (
    ARTICLE,
    GENERIC_SHAPE,
    NOUN_TO_SHAPE,
    WORLD_WORDS,
    alternatives,
    attribute_captions,
    erasure_templates,
)


class WorldProfile(PaperProfile):
    name = SHAPES_WORLD
    side_attributes = ("colour", "style")
    relearn_lr = 1e-3  # the tiny world model moves little at real models' 1e-4; chosen on square (docs/tuning/prompt-free-attacks.md)
    method_defaults = WORLD_DEFAULTS
    label = "shapes world"  # how a default's reason names where it was chosen
    generation_batch_size = WORLD_BATCH_SIZE
    generic_word = "shape"

    def check_concepts(self, concepts: list[str]) -> None:
        for concept in concepts:
            unknown = [w for w in concept.lower().split() if w not in WORLD_WORDS]
            if unknown:
                raise UserError(
                    f"the embedded shapes model does not know {unknown[0]!r}; its words are {', '.join(WORLD_WORDS)}"
                )

    def templates(self, concept: str, method: str) -> list[str]:
        return erasure_templates(concept, method)

    def default_preserve(self, concepts: list[str]) -> list[str]:
        """The world's attributes on the generic noun ("shape", "red shape", "striped shape", ...),
        never a named shape: evaluate's default surroundings are shapes, so none of them is
        preserved by default and every one measures collateral damage (held out). A caption that
        names a whole concept ("striped shape" when erasing "striped") is left out."""

        named = [set(concept.lower().split()) for concept in concepts]
        return [
            caption for caption in attribute_captions() if not any(words <= set(caption.split()) for words in named)
        ]

    def retain_concepts(self, concepts: list[str]) -> list[str]:
        """AdvUnlearn's retain set on the world: none. AdvUnlearn retains objects unrelated to the
        concept (its filtered COCO set drops those near it: ``coco_object_retain.csv`` against
        ``coco_object_no_filter_retain.csv``), and every prompt the world could retain names the
        generic noun, which the model may draw as the concept itself ("a red shape" can be a red
        circle). Kept at the concept's x_t, such a prompt teaches the encoder to keep drawing the
        concept one word away from its name, which is what a word-replacing learned token finds
        (docs/tuning/advunlearn.md). A multi-word concept still keeps its words alone (the
        ``words`` preservation), though "blue shape" names the generic noun too: they say what is
        erased, blue squares and not blue or squares."""
        return []

    def prior_vocabulary(self, pipeline, count: int) -> list[str]:
        """Every word of the world but the article (a vocabulary of 20 words)."""

        return [w for w in WORLD_WORDS if w != ARTICLE]

    keeps_words = True  # the world's own measured default: "blue square" erased, blue and squares kept

    def conjunction_parts(self, concept: str) -> list[str]:
        """Each word of a multi-word concept alone, an attribute on the generic noun: "blue square"
        keeps "blue shape" and "square"."""

        words = concept.lower().split()
        if len(words) < 2:
            return []
        return [w if w in NOUN_TO_SHAPE else f"{w} {GENERIC_SHAPE}" for w in words]

    def guide_candidates(self, concept: str) -> list[str]:
        """The concept with its noun replaced by each other shape (for a style or colour alone: by
        the other styles or colours): what UCE's ``nearest-concept`` guide chooses from."""

        return alternatives(concept)

    def anchor_filter(self, pipeline, concepts: list[str]):

        return anchor_filter(pipeline, ClipJudge.load(), concepts)

    def defaults(self, method_name: str, given: dict) -> dict[str, tuple[object, str]]:
        found = super().defaults(method_name, given)
        if method_name in ("esd", "advunlearn") and given.get("mode") in ("faithful", "faithful-fp32"):
            if "sample_size" in found:  # the authors' loop, with the authors' settings, at the world's size
                found["sample_size"] = (0, "shapes world: its own 32 px; the script's 1024 px is 32 times its size")
            return found
        found.update(
            {
                name: (value, f"{self.label}: {reason}")
                for name, (value, reason) in self.method_defaults.get(method_name, {}).items()
            }
        )
        return found

    def attribute_reader(self, judge):

        return attribute_reader(judge)

    def outline_reader(self):

        def read(images: list, concept: str) -> list[bool] | None:
            if not outlined(concept):
                return None  # a colour or style alone: an outline cannot show it
            return [shows(read_geometry(image), concept) for image in images]

        return read

    def verification_prompts(self, concepts: list[str]) -> list[str]:
        return ["a red circle", "a blue ring"]

    def protocol(
        self,
        concept: str,
        surrounding: list[str] | None,
        paraphrases: list[str] | None,
        anchor: str | None,
        judge: str | None,
    ):
        """The world's protocol; the world judge unless ``judge`` names another."""

        self.check_concepts([concept, *(surrounding or []), *(paraphrases or [])])
        return world_protocol(concept, surrounding, paraphrases, anchor)

    def for_concept_count(self, method_name: str, config, count: int, given: set[str]):
        return for_several_concepts(config, count, given) if method_name == "esd" else config


class MMDiTWorldProfile(WorldProfile):
    """The same world, words, judge and protocol, drawn by the MMDiT (``--model shapes-mmdit``),
    with method defaults chosen on it (``MMDIT_DEFAULTS``)."""

    name = SHAPES_WORLD_MMDIT
    method_defaults = MMDIT_DEFAULTS
    label = "MMDiT shapes world"
