"""UCE: Unified Concept Editing (Gandikota et al., WACV 2024), a closed-form edit.

For every cross-attention key and value projection W0 (they read the text embeddings):

    W = (lam W0 + es sum_i v*_i c_i^T + ps sum_j W0 c_j c_j^T) (lam I + es sum_i c_i c_i^T + ps sum_j c_j c_j^T)^-1

c_i are text-encoder embeddings of the erased concepts at chosen token positions, v*_i = W0 c*_i
with c*_i the guide prompt's embedding at the same positions, and c_j the preserved concepts'
embeddings, whose outputs the edit keeps. ``es``/``ps`` are the erase and preserve scales. The
guide is ``--anchor``, else the nearest preserved concept, else the empty prompt (the paper's
choice); see :func:`choose_guides` for the measurements behind that order.

Which token positions enter matters: ``concept`` takes only the concept's own tokens;
``through-eos`` also takes the tokens after them up to and including the first end token, which
in a causal text encoder carry the concept too (the pooled token does); ``to-end`` takes every
position after the concept, padding included, since cross-attention reads those as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from erasectl.architecture import encode_prompts, token_rows
from erasectl.methods.common import ErasureResult, MethodConfig, Progress, Stopwatch

POSITIONS = ("concept", "through-eos", "to-end")


@dataclass
class UCEConfig(MethodConfig):
    steps: int = field(default=1, metadata={"help": "Closed form: one solve (kept for a uniform recipe)."})
    lr: float = field(default=1.0, metadata={"help": "Unused by the closed form."})
    parameter_group: str = field(default="kv", metadata={"help": "kv: cross-attention key and value projections."})
    erase_scale: float = field(default=1.0, metadata={"help": "es: weight of the erased concepts' rows."})
    preserve_scale: float = field(default=1.0, metadata={"help": "ps: weight of the preserved concepts' rows."})
    lamb: float = field(default=0.1, metadata={"help": "lam: pull toward the original weights W0."})
    token_positions: str = field(default="to-end", metadata={"help": "concept, through-eos (the concept's tokens through the first end token) or to-end (through the last padding position)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parameter_group != "kv":
            raise ValueError(f"unknown parameter group {self.parameter_group!r} for uce; it edits kv only")
        if self.token_positions not in POSITIONS:
            raise ValueError(f"token_positions must be one of {', '.join(POSITIONS)}, got {self.token_positions!r}")
        if not self.lamb > 0 or self.erase_scale < 0 or self.preserve_scale < 0:
            raise ValueError("lamb must be positive and the scales 0 or more")


Config = UCEConfig
ACCEPTS_ANCHOR = True
NEEDS_ANCHOR = False


def _find(sequence: list[int], part: list[int]) -> int:
    for start in range(len(sequence) - len(part), -1, -1):
        if sequence[start : start + len(part)] == part:
            return start
    raise ValueError("concept tokens not found in its prompt")


@torch.no_grad()
def concept_rows(pipeline, prompts: list[str], concepts: list[str], positions: str, guide_prompts: list[str] | None = None):
    """Embeddings at the concept's token positions of each prompt (and the guide's at the same places)."""
    tokenizer = pipeline.tokenizer
    tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    unet = pipeline.unet
    hidden = token_rows(unet, encode_prompts(pipeline, prompts)).float()
    guide = token_rows(unet, encode_prompts(pipeline, guide_prompts)).float() if guide_prompts is not None else None
    rows, guide_rows = [], []
    for index, (prompt_ids, concept) in enumerate(zip(tokens.input_ids.tolist(), concepts)):
        concept_ids = tokenizer(concept, add_special_tokens=False).input_ids
        start = _find(prompt_ids, concept_ids)
        end = start + len(concept_ids)
        if positions == "through-eos":
            end = prompt_ids.index(tokenizer.eos_token_id, end) + 1
        elif positions == "to-end":
            end = len(prompt_ids)
        rows.append(hidden[index, start:end])
        if guide is not None:
            guide_rows.append(guide[index, start:end])
    return torch.cat(rows), (torch.cat(guide_rows) if guide is not None else None)


def closed_form(w0: torch.Tensor, erase: torch.Tensor, targets: torch.Tensor, preserve: torch.Tensor | None, config: UCEConfig) -> torch.Tensor:
    """The UCE solution for one projection, in float64. ``targets`` are v*_i (rows)."""
    w0 = w0.double()
    erase, targets = erase.double(), targets.double()
    dim = w0.shape[1]
    left = config.lamb * w0 + config.erase_scale * targets.T @ erase
    right = config.lamb * torch.eye(dim, dtype=torch.float64, device=w0.device) + config.erase_scale * erase.T @ erase
    if preserve is not None and len(preserve):
        preserve = preserve.double()
        left = left + config.preserve_scale * w0 @ preserve.T @ preserve
        right = right + config.preserve_scale * preserve.T @ preserve
    # right is symmetric: W right = left  <=>  right W^T = left^T
    return torch.linalg.solve(right, left.T).T


def erase(pipeline, concept_prompts: list[tuple[str, str]], guide_prompts: list[str], preserve_prompts: list[tuple[str, str]], config: UCEConfig, progress: Progress | None = None) -> ErasureResult:
    """``concept_prompts``/``preserve_prompts`` are ``(prompt, concept words)``; ``guide_prompts[i]``
    is ``concept_prompts[i]`` with the concept replaced by the guide."""
    with torch.autocast(pipeline.unet.device.type, enabled=False):  # a closed form gains nothing from bf16
        return _edit(pipeline, concept_prompts, guide_prompts, preserve_prompts, config, progress)


def _edit(pipeline, concept_prompts, guide_prompts, preserve_prompts, config: UCEConfig, progress) -> ErasureResult:
    watch = Stopwatch()
    erase_rows, guide_rows = concept_rows(
        pipeline, [p for p, _ in concept_prompts], [c for _, c in concept_prompts], config.token_positions, guide_prompts
    )
    preserve_rows = None
    if preserve_prompts:
        preserve_rows, _ = concept_rows(pipeline, [p for p, _ in preserve_prompts], [c for _, c in preserve_prompts], config.token_positions)
    erased, base = {}, {}
    projections = [(n, m) for n, m in pipeline.unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))]
    for done, (name, module) in enumerate(projections, start=1):
        w0 = module.weight.detach()
        new = closed_form(w0, erase_rows, guide_rows.double() @ w0.double().T, preserve_rows, config)
        base[f"unet.{name}.weight"] = w0.clone()
        with torch.no_grad():
            module.weight.copy_(new.to(w0.dtype))
        erased[f"unet.{name}.weight"] = module.weight.detach().clone()
        if progress is not None:
            progress(done, len(projections), {"loss": 0.0})
    return ErasureResult(erased, base, [0.0], watch.seconds(), {"erased_rows": len(erase_rows), "preserved_rows": 0 if preserve_rows is None else len(preserve_rows)})


def default_preserve(request) -> list[str]:
    """With no ``--preserve``: on the embedded model, the concepts evaluate checks around each
    erased one (the other shapes; for "red circle", circles of other colours and other red
    shapes). A real model has no such list: nothing is preserved unless named."""
    from erasectl.models import EMBEDDED_NAME

    if request.preserve or request.model_name != EMBEDDED_NAME:
        return list(request.preserve)
    from erasectl.evaluation import world_protocol

    found = [kept for concept in request.concepts for kept in world_protocol(concept, None, None, None).surrounding]
    return [kept for kept in dict.fromkeys(found) if kept not in request.concepts]


def choose_guides(pipeline, concepts: list[str], anchor: str | None, preserve: list[str]) -> dict[str, str]:
    """The guide of each concept: ``--anchor`` if given; else its nearest preserved concept in the
    text encoder's pooled space, when any is preserved; else the empty prompt (the paper's default).

    Measured on the embedded model (circle, the other shapes preserved, seeds 0-7): guide "" leaves
    84% circles and guide "shape" 81%, because what those prompts draw is mostly circles; guide
    ring, square or triangle each leaves 0% with every other shape at 100%.
    """
    if anchor:
        return {concept: anchor for concept in concepts}
    if not preserve:
        return {concept: "" for concept in concepts}
    from erasectl.neighbours import find_neighbours

    return {concept: find_neighbours(pipeline, concept, 1, vocabulary=preserve)[0] for concept in concepts}


def run(pipeline, request, config: UCEConfig, progress: Progress | None = None, control=None) -> ErasureResult:
    """A closed form has nothing to resume; ``control`` is accepted for a uniform interface."""
    preserve = default_preserve(request)
    guides = choose_guides(pipeline, request.concepts, request.anchor, preserve)
    concept_prompts, guide_prompts = [], []
    for concept in request.concepts:
        for template in request.templates(concept, "uce"):
            concept_prompts.append((template.format(concept), concept))
            guide_prompts.append(" ".join(template.format(guides[concept]).split()))
    preserve_prompts = [(template.format(kept), kept) for kept in preserve for template in request.templates(kept, "uce")]
    result = erase(pipeline, concept_prompts, guide_prompts, preserve_prompts, config, progress)
    result.extra.update({"guides": guides, "preserved": preserve})
    return result
