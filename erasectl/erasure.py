"""Erase concepts from a pipeline with a registered method and package the result as a checkpoint."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace

from erasectl.architecture import denoiser, family
from erasectl.checkpoint import ErasedCheckpoint, make_checkpoint
from erasectl.distributed import sharded, world
from erasectl.errors import UserError
from erasectl.methods import get_method, method_names
from erasectl.methods.base import CONCEPT_TYPES
from erasectl.profiles import PaperProfile


def check_concepts(concepts: list[str], profile: PaperProfile) -> list[str]:
    cleaned = [" ".join(c.split()) for c in concepts]
    if not cleaned or any(not c for c in cleaned):
        raise UserError("the concept is empty; pass --concept with the words to erase, e.g. --concept circle")
    profile.check_concepts(cleaned)
    return cleaned


@dataclass
class ErasureRequest:
    """What to erase and the model's policies (its profile) that the methods are handed: they read
    prompts, default preservation and the anchor filter from here, never from the profile's module."""

    concepts: list[str]
    profile: PaperProfile
    anchor: str | None = None
    anchor_prompt_lines: list[str] | None = None
    # as given (empty: the method's default); erase_concepts resolves it (``resolved``)
    preserve: list[str] = field(default_factory=list)
    model_name: str = ""
    model_config: str = ""  # the config folder a single-file model loads with
    prior_exclude: list[str] = field(default_factory=list)  # words a null-space prior leaves out
    preserve_source: str = "given"
    keep_words: bool | None = None  # preserve a multi-word concept's words alone; None: the profile's default
    concept_type: str | None = None  # --concept-type: object, style, nudity, person (None: not said)

    def __post_init__(self) -> None:
        """Refuse a request that contradicts itself, before anything is loaded or trained."""
        seen = set()
        for concept in self.concepts:
            if concept.lower() in seen:
                raise UserError(f"{concept!r} is named twice among the concepts; name each concept once")
            seen.add(concept.lower())
        if self.anchor and self.anchor.lower() in seen:
            raise UserError(
                f"the anchor {self.anchor!r} is the concept being erased; map it onto another concept, e.g. --anchor shape for circle"
            )
        both = [kept for kept in self.preserve if kept.lower() in seen]
        if both:
            raise UserError(f"{both[0]!r} is both erased and preserved; leave it out of --preserve")

    def templates(self, concept: str, method: str) -> list[str]:
        return self.profile.templates(concept, method)

    def resolved(self, sources: tuple[str, ...]) -> ErasureRequest:
        """This request with ``preserve`` resolved once, for every method and for evaluate: the
        given concepts, else the method's default ``sources`` (``Method.default_preservation``)
        in their order: ``words``, a multi-word concept's words alone (erase "blue square", keep
        "blue" and "square": a conjunction, not a union) where ``keep_words`` (else the profile)
        says so; ``attributes``, the profile's attribute captions; ``retain-set``, the profile's
        retain set. ``keep_words`` is resolved too."""
        keep_words = self.profile.keeps_words if self.keep_words is None else self.keep_words
        if self.preserve:
            return replace(
                self, preserve=list(dict.fromkeys(self.preserve)), preserve_source="given", keep_words=keep_words
            )
        found = {
            "words": self.conjunction_parts if keep_words else list,
            "attributes": lambda: self.profile.default_preserve(self.concepts),
            "retain-set": lambda: self.profile.retain_concepts(self.concepts),
        }
        default = [concept for source in sources for concept in found[source]()]
        source = "default: " + (", ".join(sources) or "none")
        return replace(self, preserve=list(dict.fromkeys(default)), preserve_source=source, keep_words=keep_words)

    def conjunction_parts(self) -> list[str]:
        found = [part for concept in self.concepts for part in self.profile.conjunction_parts(concept)]
        return [p for p in dict.fromkeys(found) if p not in self.concepts]

    def guide_candidates(self, concept: str) -> list[str]:
        return self.profile.guide_candidates(concept)

    def anchor_filter(self, pipeline):
        """A function marking the anchor latents to train on, or None where the profile has none."""
        return self.profile.anchor_filter(pipeline, self.concepts)


def resolve_defaults(
    method_name: str, profile: PaperProfile, given: dict, concept_type: str | None = None
) -> dict[str, tuple[object, str]]:
    """Every hyper-parameter of ``method_name`` for this profile: ``(value, source)``, the user's
    ``given`` options (None = not given) winning over what the authors publish for
    ``concept_type``, which wins over the profile's defaults."""
    found = profile.defaults(method_name, {k: v for k, v in given.items() if v is not None})
    found.update(
        {
            name: (value, f"--concept-type {concept_type}: {source}")
            for name, (value, source) in concept_type_defaults(method_name, concept_type).items()
            if name != "anchor"
        }
    )
    for name, value in given.items():
        if value is not None:
            if name not in found:
                raise UserError(
                    f"--{name.replace('_', '-')} is not an option of --method {method_name}; see erasectl erase --help"
                )
            found[name] = (value, "given")
    return found


def concept_type_defaults(method_name: str, concept_type: str | None) -> dict[str, tuple[object, str]]:
    """What the method's authors publish for ``concept_type`` (None: nothing)."""
    if concept_type is None:
        return {}
    if concept_type not in CONCEPT_TYPES:
        raise UserError(f"--concept-type {concept_type} is not known; choose one of {', '.join(CONCEPT_TYPES)}")
    return get_method(method_name).concept_types.get(concept_type, {})


def build_config(
    method_name: str, profile: PaperProfile, given: dict, concept_count: int = 1, concept_type: str | None = None
):
    """The method's config: the user's options over the concept type's and the profile's defaults,
    adjusted for several concepts where the profile says so."""
    method = get_method(method_name)
    values = {name: value for name, (value, _) in resolve_defaults(method_name, profile, given, concept_type).items()}
    try:
        config = method.config_class(**values)
    except ValueError as error:  # a config's own check of the user's values
        raise UserError(f"{error}; see erasectl erase --help") from None
    return profile.for_concept_count(method_name, config, concept_count, {k for k, v in given.items() if v is not None})


MIXED_PRECISION = ("no", "bf16")


def check_mixed_precision(value: str) -> str:
    if value not in MIXED_PRECISION:
        raise UserError(
            f"--mixed-precision {value} is not supported; choose one of {', '.join(MIXED_PRECISION)} (fp16 needs loss scaling; use bf16)"
        )
    return value


@contextmanager
def execution(pipeline, mixed_precision: str = "no", gradient_checkpointing: bool = False):
    """How the erasure runs, not what it learns: bf16 autocast (the weights, their gradients and
    the optimizer stay in fp32) and the UNet's gradient checkpointing (activations recomputed in
    the backward pass instead of stored). fp16 would need loss scaling, which erasectl does not do."""
    import torch

    check_mixed_precision(mixed_precision)
    unet = denoiser(pipeline)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    autocast = torch.autocast(unet.device.type, dtype=torch.bfloat16) if mixed_precision == "bf16" else nullcontext()
    try:
        with autocast:
            yield
    finally:
        if gradient_checkpointing:
            unet.disable_gradient_checkpointing()


def erase_concepts(
    pipeline,
    method_name: str,
    request: ErasureRequest,
    config,
    progress=None,
    control=None,
    mixed_precision: str = "no",
    gradient_checkpointing: bool = False,
) -> ErasedCheckpoint:
    """Train the erasure in place on ``pipeline`` and return its checkpoint."""
    method = get_method(method_name)
    if method.needs_anchor and not request.anchor:
        raise UserError(
            f"--method {method_name} needs --anchor, the concept to map onto (e.g. --anchor shape for circle)"
        )
    if request.anchor is not None and not request.anchor.strip():
        raise UserError("the anchor is empty; pass --anchor with a concept, e.g. --anchor shape")
    found = family(pipeline)
    if found not in method.families:
        others = [name for name in method_names() if found in get_method(name).families]
        hint = "choose another --method" if others else f"no erasure method supports {found} models yet (generate draws from them)"  # fmt: skip
        raise UserError(f"--method {method_name} supports {', '.join(method.families)} models, not {found}; {hint}")
    request = request.resolved(method.default_preservation)
    with execution(pipeline, mixed_precision, gradient_checkpointing):
        result = method.run(pipeline, request, config, progress, control)
    recipe = {
        "method": method_name,
        "profile": request.profile.name,
        "concepts": request.concepts,
        "anchor": request.anchor,
        "preserve": request.preserve,
        "preserve_source": request.preserve_source,
        "keep_words": request.keep_words,
        "concept_type": request.concept_type,
        "config": asdict(config),
        "steps": config.steps,
        "wall_time_s": result.wall_time_s,
        "final_loss": result.losses[-1],
        "base_model": request.model_name,
        "family": family(pipeline),
        "processes": world()[1],
        "sharded": sharded(),  # FSDP2: parameters, gradients and optimizer state split over the processes
        "mixed_precision": mixed_precision,
        "gradient_checkpointing": gradient_checkpointing,
        **result.extra,
    }
    return make_checkpoint(result.erased, result.base, recipe, request.model_name, request.model_config)
