"""What a loaded model *is*, for erasectl's policies: the paper's settings for any real model, or
the embedded shapes world's measured ones.

The profile is read from a marker file in the model's folder (``erasectl_profile.json``, which the
embedded model and every folder exported from it carry), never from the model's name: the same
weights, loaded by any path, get the same defaults, templates, preservation and evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

from erasectl.assets import advunlearn_retain_objects
from erasectl.errors import UserError
from erasectl.methods import get_method
from erasectl.neighbours import frequent_words

MARKER = "erasectl_profile.json"
PAPER = "paper"
SHAPES_WORLD = "shapes-world"
SHAPES_WORLD_MMDIT = "shapes-world-mmdit"  # the same world drawn by the MMDiT: its own method defaults

# Prompts around a concept for real SD models. ESD samples under the bare concept and UCE edits
# the bare concept, as the authors' scripts do; ablation pairs varied captions, in the spirit of
# the paper's generated anchor captions.
GENERIC_TEMPLATES = {
    "esd": ["{}"],
    "ablate": [
        "a photo of a {}",
        "a painting of a {}",
        "a close-up photo of a {}",
        "a drawing of a {}",
        "a picture of a {} outdoors",
        "a photo of a {} in a room",
        "a blurry photo of a {}",
        "a rendering of a {}",
    ],
    "uce": ["{}"],
    "retain": ["a photo of {}"],  # AdvUnlearn's retain prompts
}


class PaperProfile:
    """Any real model: each method's paper (or authors' script) settings, generic templates, no
    default preservation, no anchor filter."""

    name = PAPER
    generation_batch_size = 8  # SD 1.5 at 512 px in a 24 GB GPU
    generic_word = "object"  # where an attack's learned token starts
    # what the attribute reader reads beside the prompt's subject: an image gaining one its prompt
    # did not ask for (every shape striped) is damage the subject's accuracy cannot see
    side_attributes: tuple[str, ...] = ()
    relearn_lr = 1e-4  # the relearn attack's LoRA learning rate: diffusers' DreamBooth-LoRA example's

    def check_concepts(self, concepts: list[str]) -> None:
        """Words this model cannot know (none, for an open-vocabulary text encoder)."""

    def templates(self, concept: str, method: str) -> list[str]:
        return GENERIC_TEMPLATES[method]

    def default_preserve(self, concepts: list[str]) -> list[str]:
        return []

    def prior_vocabulary(self, pipeline, count: int) -> list[str]:
        """The broad set of words a null-space erasure keeps: the tokenizer's ``count`` most
        frequent whole words."""

        return frequent_words(pipeline.tokenizer, count)

    def retain_concepts(self, concepts: list[str]) -> list[str]:
        """AdvUnlearn's utility-retaining set: the 237 objects of its retain prompts (none a
        person, so nudity never retains one), less any that shares a word with a concept."""
        words = {w for concept in concepts for w in concept.lower().split()}
        return [name for name in advunlearn_retain_objects() if not words & set(name.lower().split())]

    # Whether a multi-word concept's words alone are preserved without --keep-words: not on real
    # models, where the papers erase the phrase and preserve nothing unnamed (a surname carries
    # much of an artist's style).
    keeps_words = False

    def conjunction_parts(self, concept: str) -> list[str]:
        """A multi-word concept's words alone, what ``--keep-words`` preserves ("grumpy cat":
        "grumpy" and "cat"); nothing for a single word."""
        words = concept.split()
        return words if len(words) > 1 else []

    def guide_candidates(self, concept: str) -> list[str]:
        """Concepts UCE's ``nearest-concept`` guide chooses among; none on real models (there the
        guide is the empty prompt, as in the paper, unless --anchor names one)."""
        return []

    def anchor_filter(self, pipeline, concepts: list[str]):
        return None

    def defaults(self, method_name: str, given: dict) -> dict[str, tuple[object, str]]:
        """Every field of the method's config: ``(default, where it comes from)``, under the
        options the user ``given`` (a chosen ESD mode brings its batching)."""

        method = get_method(method_name)
        found = {name: (d.default, d.source) for name, d in method.config_class.declarations().items()}
        found.update(
            {
                k: (v, f"--mode {given.get('mode')}: what the mode brings")
                for k, v in method.mode_defaults(given.get("mode")).items()
            }
        )
        return found

    def for_concept_count(self, method_name: str, config, count: int, given: set[str]):
        return config

    def attribute_reader(self, judge):
        """A function reading each image's attributes (shape, colour, style) with what its prompt
        asked, where this model's world has them; None for real models."""
        return None

    def outline_reader(self):
        """A function telling, for each image, whether its drawn outline shows a concept
        (``(images, concept) -> list[bool]``, None for a concept no outline shows), where this
        model's world has one; None for real models."""
        return None

    def verification_prompts(self, concepts: list[str]) -> list[str]:
        """Prompts export draws with erasectl and with the consumer's loader to compare."""
        return [f"a photo of a {concepts[0]}", "a photo of a city street at night"]

    def protocol(
        self,
        concept: str,
        surrounding: list[str] | None,
        paraphrases: list[str] | None,
        anchor: str | None,
        judge: str | None,
    ):
        """This model's own evaluation protocol, or None: the generic one
        (``erasectl.evaluation.protocol.protocol_for``) applies."""
        return None


# A marker names its profile; the class is looked up here, so the core imports no world of its own.
PROFILES = {
    PAPER: "erasectl.profiles:PaperProfile",
    SHAPES_WORLD: "erasectl.world.profile:WorldProfile",
    SHAPES_WORLD_MMDIT: "erasectl.world.profile:MMDiTWorldProfile",
}


def profile_named(name: str) -> PaperProfile:
    import importlib

    if name not in PROFILES:
        raise UserError(f"unknown erasectl profile {name!r} in {MARKER}; it must be one of {', '.join(PROFILES)}")
    module, _, class_name = PROFILES[name].partition(":")
    return getattr(importlib.import_module(module), class_name)()


def profile_of(source) -> PaperProfile:
    """The profile of a model folder (or a single file's config folder): its marker, else the paper's."""
    if source is None:
        return PaperProfile()
    marker = Path(source) / MARKER
    if not marker.is_file():
        return PaperProfile()
    try:
        return profile_named(json.loads(marker.read_text())["profile"])
    except (ValueError, KeyError) as error:
        raise UserError(
            f'{marker} is not a valid erasectl profile marker ({error}); delete it or write {{"profile": "{PAPER}"}}'
        ) from None


def write_marker(folder: Path, profile: PaperProfile) -> None:
    """Mark a folder (an export of a model) with the profile of the model it came from."""
    if profile.name != PAPER:
        (Path(folder) / MARKER).write_text(json.dumps({"profile": profile.name}) + "\n")
