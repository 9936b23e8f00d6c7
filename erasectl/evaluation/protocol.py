"""What evaluate measures: the prompt sets around a concept, the judge's classes, the seeds and sampler."""

from __future__ import annotations

from dataclasses import dataclass, field

from erasectl.errors import ConfigError, UserError
from erasectl.generation import SamplerSettings

SCHEMA_VERSION = "1.1"
# The headline's rates, each with its interval: what --target-interval narrows and --against compares
HEADLINE_RATES = ("erased_accuracy", "surrounding_accuracy", "held_out_colour_accuracy", "held_out_style_accuracy",
                  "held_out_attribute_gain")  # fmt: skip


# Prompts around a concept for evaluating a real model: plain photo templates; the judge's text is
# "a photo of a <concept>" (CLIP's own zero-shot prompt). The embedded world's are erasectl.world.protocol.
GENERIC_TEMPLATES = ["a photo of a {}", "a painting of a {}", "a close-up photo of a {}", "a drawing of a {}"]
# The judge's open set on a real model: besides the concept, its surroundings and the anchor, broad
# classes an erased model may draw instead, so that "none of the named concepts" can be read
# rather than forced onto the nearest named one.
OPEN_SET = ["object", "person", "animal", "plant", "building", "landscape", "pattern", "blank image"]


@dataclass(frozen=True)
class EvaluationConfig:
    n_per_prompt: int = 8
    seed: int = 0
    steps: int = 25
    guidance: float = 7.5
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int = 64
    target_interval: float | None = None  # add seeds until every headline rate is within +- this
    max_images: int = 2000  # per model, where a target interval is asked

    def __post_init__(self) -> None:
        self.sampler()  # checks the sampler settings
        if self.target_interval is not None and not 0 < self.target_interval < 0.5:
            raise ConfigError(f"target-interval is a half-width between 0 and 0.5, got {self.target_interval}")
        if self.max_images <= 0:
            raise ConfigError(f"max-images must be at least 1, got {self.max_images}")
        if self.n_per_prompt <= 0:
            raise ConfigError(f"n-per-prompt must be at least 1, got {self.n_per_prompt}")
        if self.steps <= 0:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")

    def sampler(self, guidance: float | None = None):

        return SamplerSettings(
            steps=self.steps,
            guidance=self.guidance if guidance is None else guidance,
            batch_size=self.batch_size,
            negative_prompt=self.negative_prompt,
            height=self.height,
            width=self.width,
        )

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.n_per_prompt))


@dataclass
class PromptSet:
    role: str  # "erased", "surrounding" or "paraphrase"
    concept: str  # the words the prompts use
    label: str  # what a faithful model draws: the judge's class
    prompts: list[str]


@dataclass
class Protocol:
    """What is measured: fixed by the concept, its neighbours and the templates."""

    concept: str
    surrounding: list[str]
    paraphrases: list[str]
    anchor: str | None
    templates: list[str]
    judge_template: str
    candidates: list[str] = field(default_factory=list)

    def prompt_sets(self) -> list[PromptSet]:
        def prompts(words: str) -> list[str]:
            return [t.format(words) for t in self.templates]

        sets = [PromptSet("erased", self.concept, self.concept, prompts(self.concept))]
        sets += [PromptSet("surrounding", s, s, prompts(s)) for s in self.surrounding]
        sets += [PromptSet("paraphrase", p, self.concept, prompts(p)) for p in self.paraphrases]
        return sets


def generic_protocol(concept: str, surrounding: list[str], paraphrases: list[str], anchor: str | None) -> Protocol:
    """Real models: the judge chooses among the concept, its surroundings, the anchor and the open set."""
    named = [concept, *surrounding] + ([anchor] if anchor else [])
    candidates = list(dict.fromkeys(named + [c for c in OPEN_SET if c not in {n.lower() for n in named}]))
    return Protocol(concept, surrounding, paraphrases, anchor, GENERIC_TEMPLATES, "a photo of a {}", candidates)


def protocol_for(
    profile,
    concept: str,
    surrounding: list[str] | None,
    paraphrases: list[str] | None,
    anchor: str | None,
    judge: str | None,
) -> Protocol:
    """The protocol for a model of ``profile``: its own (the shapes world's), else the generic one,
    for which a real model needs a real CLIP judge and named surroundings."""
    own = profile.protocol(concept, surrounding, paraphrases, anchor, judge)
    if own is not None:
        return own
    if judge is None:
        raise UserError(
            "a real model needs a real CLIP judge; pass --judge openai/clip-vit-large-patch14 or a local CLIP folder"
        )
    if not surrounding:
        raise UserError("name the surrounding concepts with --surrounding a,b,c or --auto-surrounding K")
    return generic_protocol(concept, surrounding, paraphrases or [], anchor)
