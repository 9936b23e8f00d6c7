"""Erase concepts from a pipeline with a registered method and package the result as a checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

from erasectl.architecture import family
from erasectl.checkpoint import ErasedCheckpoint, make_checkpoint
from erasectl.distributed import world
from erasectl.errors import UserError
from erasectl.methods import get_method
from erasectl.models import EMBEDDED_NAME

# Prompts around a concept for real SD models. ESD samples under the bare concept, as the paper
# does; ablation pairs varied captions, in the spirit of the paper's generated anchor captions.
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
    "uce": ["{}", "a photo of a {}", "a painting of a {}", "a picture of a {}"],
}


def check_concepts(concepts: list[str], model_name: str) -> list[str]:
    from erasectl.world.vocabulary import WORLD_WORDS

    cleaned = [" ".join(c.split()) for c in concepts]
    if not cleaned or any(not c for c in cleaned):
        raise UserError("the concept is empty; pass --concept with the words to erase, e.g. --concept circle")
    if model_name == EMBEDDED_NAME:
        for concept in cleaned:
            unknown = [w for w in concept.lower().split() if w not in WORLD_WORDS]
            if unknown:
                raise UserError(
                    f"the embedded shapes model does not know {unknown[0]!r}; its words are {', '.join(WORLD_WORDS)}"
                )
    return cleaned


@dataclass
class ErasureRequest:
    concepts: list[str]
    model_name: str
    anchor: str | None = None
    anchor_prompt_lines: list[str] | None = None
    keep_anchor: Callable | None = None
    preserve: list[str] = field(default_factory=list)

    def templates(self, concept: str, method: str) -> list[str]:
        if self.model_name == EMBEDDED_NAME:
            from erasectl.world.vocabulary import erasure_templates

            return erasure_templates(concept, method)
        return GENERIC_TEMPLATES[method]

    def anchor_prompts(self, concept: str) -> list[str]:
        if self.anchor_prompt_lines:
            found = [line for line in self.anchor_prompt_lines if self.anchor in line]
            if not found:
                raise UserError(f"no line of the anchor prompts file contains the anchor {self.anchor!r}; each prompt must name it")
            return found
        return [template.format(self.anchor) for template in self.templates(concept, "ablate")]


MIXED_PRECISION = ("no", "bf16")


def check_mixed_precision(value: str) -> str:
    if value not in MIXED_PRECISION:
        raise UserError(f"--mixed-precision {value} is not supported; choose one of {', '.join(MIXED_PRECISION)} (fp16 needs loss scaling; use bf16)")
    return value


@contextmanager
def execution(pipeline, mixed_precision: str = "no", gradient_checkpointing: bool = False):
    """How the erasure runs, not what it learns: bf16 autocast (the weights, their gradients and
    the optimizer stay in fp32) and the UNet's gradient checkpointing (activations recomputed in
    the backward pass instead of stored). fp16 would need loss scaling, which erasectl does not do."""
    import torch

    check_mixed_precision(mixed_precision)
    unet = pipeline.unet
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
    pipeline, method_name: str, request: ErasureRequest, config, progress=None, control=None, mixed_precision: str = "no", gradient_checkpointing: bool = False
) -> ErasedCheckpoint:
    """Train the erasure in place on ``pipeline`` and return its checkpoint."""
    method = get_method(method_name)
    if method.NEEDS_ANCHOR and not request.anchor:
        raise UserError(f"--method {method_name} needs --anchor, the concept to map onto (e.g. --anchor shape for circle)")
    if request.anchor is not None and not request.anchor.strip():
        raise UserError("the anchor is empty; pass --anchor with a concept, e.g. --anchor shape")
    with execution(pipeline, mixed_precision, gradient_checkpointing):
        result = method.run(pipeline, request, config, progress, control)
    recipe = {
        "method": method_name,
        "concepts": request.concepts,
        "anchor": request.anchor,
        "preserve": request.preserve,
        "config": asdict(config),
        "steps": config.steps,
        "wall_time_s": result.wall_time_s,
        "final_loss": result.losses[-1],
        "base_model": request.model_name,
        "family": family(pipeline),
        "processes": world()[1],
        "mixed_precision": mixed_precision,
        "gradient_checkpointing": gradient_checkpointing,
        **result.extra,
    }
    return make_checkpoint(pipeline, result.erased, result.base, recipe, request.model_name)


def world_anchor_filter(pipeline, judge, concepts: list[str]):
    """For ablation on the shapes world: drop anchor images the judge reads as an erased concept.

    "a red shape" draws circles a fifth of the time; mapping "circle" onto those would teach the
    model to keep drawing circles. The paper's anchor captions have the same flaw, less visibly.
    """
    import torch

    from erasectl.world.judging import read_attributes
    from erasectl.world.vocabulary import COLOURS, NOUN_TO_SHAPE, STYLES

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

    return keep
