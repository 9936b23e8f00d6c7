"""UCE: Unified Concept Editing (Gandikota et al., WACV 2024), a closed-form edit.

For every cross-attention key and value projection W0 (they read the text embeddings):

    W = (lam W0 + es sum_i v*_i c_i^T + ps sum_j W0 c_j c_j^T) (lam I + es sum_i c_i c_i^T + ps sum_j c_j c_j^T)^-1

c_i are text-encoder embeddings of the erased concepts at chosen token positions, v*_i = W0 c*_i
with c*_i the guide prompt's embedding at the aligned position, and c_j the preserved concepts'
embeddings, whose outputs the edit keeps. ``es``/``ps`` are the erase and preserve scales.

Which token positions enter: ``last`` is the authors' script (``uce_sd_erase.py``): the prompt's
last token before the end token, on both sides; ``concept`` takes every token of the concept;
``through-eos`` also the tokens after it up to and including the first end token, which in a
causal text encoder carry the concept too; ``to-end`` every position after the concept, padding
included, since cross-attention reads those as well. Rows are aligned from the end, as the
authors' script does, so a guide of any token length works: the concept's k-th token from its end
meets the guide's k-th from its end (its first token when the guide is shorter, the token before
it when the guide is empty: the start token for a bare empty prompt, as in the script), and the
positions after the concept meet those after the guide, end token with end token.

``variant``: ``script`` is the current script; ``paper`` is the paper-era ``train_erase.py``,
whose edits the paper's numbers come from: the rows from the concept prompt's last token to the
end, padding included, meet the guide prompt's from its own last token in order, and the empty
prompt and every preserved concept are kept at all positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from erasectl.architecture import (
    component_name,
    denoiser,
    encode_prompts,
    pooled_rows,
    text_projections,
    token_rows,
    token_streams,
)
from erasectl.errors import ConfigError
from erasectl.methods.base import ALL_FAMILIES, ErasureResult, Method, MethodConfig, Progress, Stopwatch, setting
from erasectl.methods.common import write_solved
from erasectl.neighbours import find_neighbours

# (original weights by name, rows, guide rows, preserved rows, config) -> (solved weights, recipe extras)
SolveAll = Callable[[dict, torch.Tensor, torch.Tensor, "torch.Tensor | None", "UCEConfig"], tuple[dict, dict]]
POSITIONS = ("last", "concept", "through-eos", "to-end")
GUIDE_CHOICES = ("empty", "nearest-preserved", "nearest-concept")
REFERENCE = "UCE's script uce_sd_erase.py (rohitgandikota/unified-concept-editing), argparse defaults"
PAPER_SCRIPT = "UCE's paper-era train-scripts/train_erase.py (rohitgandikota/unified-concept-editing at 4502388^)"
VARIANTS = ("script", "paper")


@dataclass
class UCEConfig(MethodConfig):
    """Defaults: the authors' script, which real models get (the embedded world's own measured set
    lives in ``erasectl.world.defaults``)."""

    steps: int = setting(1, "Closed form: one solve (kept for a uniform recipe).", "closed form")
    lr: float = setting(1.0, "Unused by the closed form.", "closed form")
    parameter_group: str = setting(
        "kv", "kv: cross-attention key and value projections.", f"{REFERENCE}: attn2 to_k and to_v"
    )
    erase_scale: float = setting(1.0, "es: weight of the erased concepts' rows.", f"{REFERENCE}: --erase_scale 1")
    preserve_scale: float = setting(
        1.0, "ps: weight of the preserved concepts' rows.", f"{REFERENCE}: --preserve_scale 1"
    )
    lamb: float = setting(0.5, "lam: pull toward the original weights W0.", f"{REFERENCE}: --lamb 0.5")
    guide_choice: str = setting(
        "empty",
        "Without --anchor: empty (the empty prompt, the paper's default for objects), nearest-preserved (the preserved concept nearest in the text encoder's pooled space; the empty prompt when none is preserved) or nearest-concept (the nearest of the model profile's alternatives to the concept, e.g. another shape on the embedded model; the empty prompt where the profile has none).",
        f"{REFERENCE}: guide_concepts default ''",
    )
    token_positions: str = setting(
        "last",
        "last (the token before the end token), concept, through-eos or to-end (script variant).",
        f"{REFERENCE}: the last token (attention_mask.sum() - 2)",
    )
    variant: str = setting(
        "script",
        "script: the current script (the rows at --token-positions, nothing preserved unless named); paper: the paper-era script, whose numbers the paper reports (every position from the concept's last token to the end, aligned with the guide's, and the empty prompt and each preserved concept kept at all positions).",
        f"{REFERENCE}; paper: {PAPER_SCRIPT}",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parameter_group != "kv":
            raise ConfigError(f"unknown parameter group {self.parameter_group!r} for uce; it edits kv only")
        if self.guide_choice not in GUIDE_CHOICES:
            raise ConfigError(f"guide_choice must be one of {', '.join(GUIDE_CHOICES)}, got {self.guide_choice!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.token_positions not in POSITIONS:
            raise ConfigError(f"token_positions must be one of {', '.join(POSITIONS)}, got {self.token_positions!r}")
        if not self.lamb > 0 or self.erase_scale < 0 or self.preserve_scale < 0:
            raise ConfigError("lamb must be positive and the scales 0 or more")


def _find(sequence: list[int], part: list[int]) -> int:
    for start in range(len(sequence) - len(part), -1, -1):
        if sequence[start : start + len(part)] == part:
            return start
    raise ValueError("concept tokens not found in its prompt")


def concept_positions(prompt_ids: list[int], start: int, end: int, eos_id: int, positions: str) -> list[int]:
    """Token positions of a prompt whose concept spans ``[start, end)`` that enter the edit."""
    if positions == "last":
        return [end - 1]
    if positions == "through-eos":
        return list(range(start, prompt_ids.index(eos_id, end) + 1))
    if positions == "to-end":
        return list(range(start, len(prompt_ids)))
    return list(range(start, end))


def aligned_guide_position(position: int, start: int, end: int, guide_end: int, length: int) -> int:
    """The guide prompt's position for the concept prompt's ``position``, aligned from the end.
    The guide spans ``[start, guide_end)`` (the same template, so the same start)."""
    if position >= end:
        return min(position - end + guide_end, length - 1)
    if guide_end == start:  # empty guide: the token before it (the start token for a bare prompt)
        return start - 1
    return max(guide_end - (end - position), start)


@torch.no_grad()
def concept_rows(pipeline, prompts: list[str], concepts: list[str], positions: str, guides: list[str] | None = None):
    """Embeddings at the concept's token positions of each prompt, and, with ``guides`` (the
    guide word of each prompt; its guide prompt is the prompt with the concept replaced), the guide
    prompt's embeddings at the aligned positions; in every token stream of the family (SD3: CLIP's
    rows and T5's; FLUX: T5's), each stream's positions found with its own tokenizer."""
    module = denoiser(pipeline)
    hidden = token_rows(module, encode_prompts(pipeline, prompts)).float()
    guide_hidden = None
    if guides is not None:
        guide_prompts = [
            guide_prompt(prompt, concept, guide) for prompt, concept, guide in zip(prompts, concepts, guides)
        ]
        guide_hidden = token_rows(module, encode_prompts(pipeline, guide_prompts)).float()
    rows, guide_rows = [], []
    for tokenizer, first, length in token_streams(pipeline):
        tokens = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        for index, (prompt_ids, concept) in enumerate(zip(tokens.input_ids.tolist(), concepts)):
            concept_ids = tokenizer(concept, add_special_tokens=False).input_ids
            start = _find(prompt_ids, concept_ids)
            end = start + len(concept_ids)
            chosen = concept_positions(prompt_ids, start, end, tokenizer.eos_token_id, positions)
            rows.append(hidden[index, [first + p for p in chosen]])
            if guide_hidden is not None:
                guide_end = start + len(tokenizer(guides[index], add_special_tokens=False).input_ids)
                aligned = [aligned_guide_position(p, start, end, guide_end, length) % length for p in chosen]
                guide_rows.append(guide_hidden[index, [first + p for p in aligned]])
    return torch.cat(rows), (torch.cat(guide_rows) if guide_hidden is not None else None)


def guide_prompt(prompt: str, concept: str, guide: str) -> str:
    """``prompt`` with its last occurrence of ``concept`` replaced by ``guide`` (spaces tidied)."""
    head, _, tail = prompt.rpartition(concept)
    return " ".join(f"{head}{guide}{tail}".split())


def closed_form(
    w0: torch.Tensor, erase: torch.Tensor, targets: torch.Tensor, preserve: torch.Tensor | None, config: UCEConfig
) -> torch.Tensor:
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


def erase(
    pipeline,
    concept_prompts: list[tuple[str, str]],
    guides: list[str],
    preserve_prompts: list[tuple[str, str]],
    config: UCEConfig,
    progress: Progress | None = None,
    extra_rows: tuple[torch.Tensor, torch.Tensor] | None = None,
    solve_all: SolveAll | None = None,
) -> ErasureResult:
    """``concept_prompts``/``preserve_prompts`` are ``(prompt, concept words)``; ``guides[i]`` is
    the guide of ``concept_prompts[i]`` (its guide prompt is the prompt with the concept replaced).
    ``extra_rows``: more ``(rows, guide rows)`` to erase (RECE's attack rounds); ``solve_all``:
    the solve of every projection (default: UCE's one solve; RECE passes its rounds)."""
    with torch.autocast(pipeline.device.type, enabled=False):  # a closed form gains nothing from bf16
        return _edit(
            pipeline, concept_prompts, guides, preserve_prompts, config, progress, extra_rows, solve_all or solve_once
        )


def solve_once(
    originals: dict[str, torch.Tensor], rows: torch.Tensor, guide_rows: torch.Tensor, preserve_rows, config: UCEConfig
) -> tuple[dict, dict]:
    """UCE's solve of each projection: ``(solved weights by name, what to record)``."""
    solved = {
        name: closed_form(w0, rows, guide_rows.double() @ w0.double().T, preserve_rows, config)
        for name, w0 in originals.items()
    }
    return solved, {"erased_rows": len(rows)}


def _edit(
    pipeline, concept_prompts, guides, preserve_prompts, config: UCEConfig, progress, extra_rows, solve_all: SolveAll
) -> ErasureResult:
    watch = Stopwatch()
    erase_rows, guide_rows, preserve_rows = edit_rows(pipeline, concept_prompts, guides, preserve_prompts, config)
    if extra_rows is not None:
        erase_rows, guide_rows = torch.cat([erase_rows, extra_rows[0]]), torch.cat([guide_rows, extra_rows[1]])
    module = denoiser(pipeline)
    projections = text_projections(module)
    originals = {name: m.weight.detach().clone() for name, m in projections}
    solved, extra = solve_all(originals, erase_rows, guide_rows, preserve_rows, config)
    erased, base = write_solved(projections, lambda name, _: solved[name], progress, component_name(module))
    extra["preserved_rows"] = 0 if preserve_rows is None else len(preserve_rows)
    pooled = text_projections(module, "pooled")
    if pooled:  # a transformer's pooled path carries the concept too: UCE's edit of it, as UCE's FLUX script
        rows = pooled_edit_rows(pipeline, concept_prompts, guides, preserve_prompts, config)
        more, more_base = write_solved(
            pooled, lambda name, w0: closed_form(w0, rows[0], rows[1] @ w0.double().T, rows[2], config), None,
            component_name(module),
        )  # fmt: skip
        erased.update(more)
        base.update(more_base)
    return ErasureResult(erased, base, [0.0], watch.seconds(), extra)


@torch.no_grad()
def pooled_edit_rows(pipeline, concept_prompts, guides, preserve_prompts, config: UCEConfig):
    """A transformer's pooled vectors of the concept prompts, of their guide prompts and of the
    preserved prompts (the paper variant keeps the empty prompt's too): the pooled map's rows."""
    module = denoiser(pipeline)

    def pooled(prompts):
        return pooled_rows(module, encode_prompts(pipeline, prompts)).double() if prompts else None

    prompts = [p for p, _ in concept_prompts]
    guide_prompts = [guide_prompt(p, c, g) for (p, c), g in zip(concept_prompts, guides)]
    kept = [p for p, _ in preserve_prompts] + ([""] if config.variant == "paper" else [])
    return pooled(prompts), pooled(guide_prompts), pooled(kept)


def edit_rows(pipeline, concept_prompts, guides, preserve_prompts, config: UCEConfig):
    """``(erased rows, their guide rows, preserved rows or None)`` for ``config.variant``."""
    prompts, concepts = [p for p, _ in concept_prompts], [c for _, c in concept_prompts]
    if config.variant == "paper":
        guide_prompts = [guide_prompt(p, c, g) for p, c, g in zip(prompts, concepts, guides)]
        erase_rows, guide_rows = last_to_end_rows(pipeline, prompts, guide_prompts)
        return erase_rows, guide_rows, every_row(pipeline, [""] + [p for p, _ in preserve_prompts])
    erase_rows, guide_rows = concept_rows(pipeline, prompts, concepts, config.token_positions, guides)
    preserve_rows = None
    if preserve_prompts:
        preserve_rows, _ = concept_rows(
            pipeline, [p for p, _ in preserve_prompts], [c for _, c in preserve_prompts], config.token_positions
        )
    return erase_rows, guide_rows, preserve_rows


@torch.no_grad()
def every_row(pipeline, prompts: list[str]) -> torch.Tensor:
    """All ``model_max_length`` rows of each prompt, padding included, stacked."""
    return token_rows(denoiser(pipeline), encode_prompts(pipeline, prompts)).float().flatten(0, 1)


@torch.no_grad()
def last_to_end_rows(pipeline, prompts: list[str], guide_prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper-era script's rows: each prompt's positions from its last token before the end
    token (``attention_mask.sum() - 2``) to the end, paired in order with its guide prompt's from
    the guide's last token, both cut to the shorter run (in every token stream of the family)."""
    module = denoiser(pipeline)
    hidden = token_rows(module, encode_prompts(pipeline, prompts)).float()
    guide_hidden = token_rows(module, encode_prompts(pipeline, guide_prompts)).float()
    rows, guide_rows = [], []
    for tokenizer, first, length in token_streams(pipeline):

        def lasts(texts, tokenizer=tokenizer, length=length):
            mask = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
            return (mask.attention_mask.sum(dim=1) - 2).clamp(min=0).tolist()

        for index, (last, guide_last) in enumerate(zip(lasts(prompts), lasts(guide_prompts))):
            count = length - max(last, guide_last)
            rows.append(hidden[index, first + last : first + last + count])
            guide_rows.append(guide_hidden[index, first + guide_last : first + guide_last + count])
    return torch.cat(rows), torch.cat(guide_rows)


def choose_guides(
    pipeline, concepts: list[str], anchor: str | None, preserve: list[str], choice: str = "empty", candidates=None
) -> dict[str, str]:
    """The guide of each concept: ``--anchor`` if given; else, with ``nearest-preserved``, its
    nearest preserved concept in the text encoder's pooled space when any is preserved; with
    ``nearest-concept``, the nearest of ``candidates(concept)`` (the profile's alternatives) when
    it has any; else the empty prompt (the paper's default). On the embedded world the empty and
    generic guides draw the concept too, so its default is the nearest other shape
    (docs/tuning/world-defaults.md).
    """

    guides = {}
    for concept in concepts:
        pool = (
            preserve
            if choice == "nearest-preserved"
            else (candidates(concept) if choice == "nearest-concept" and candidates else [])
        )
        pool = [c for c in pool if c not in concepts]  # never guide one erased concept onto another
        guides[concept] = anchor or (find_neighbours(pipeline, concept, 1, vocabulary=pool)[0] if pool else "")
    return guides


def edit_request(
    pipeline,
    request,
    config: UCEConfig,
    progress: Progress | None = None,
    extra_rows=None,
    solve_all: SolveAll | None = None,
) -> ErasureResult:
    """The edit for an erasure request: its concepts' prompts, guides and preserved concepts."""
    preserve = request.preserve
    guides = choose_guides(
        pipeline, request.concepts, request.anchor, preserve, config.guide_choice, request.guide_candidates
    )
    concept_prompts, guide_words = [], []
    for concept in request.concepts:
        for template in request.templates(concept, "uce"):
            concept_prompts.append((template.format(concept), concept))
            guide_words.append(guides[concept])
    preserve_prompts = [
        (template.format(kept), kept) for kept in preserve for template in request.templates(kept, "uce")
    ]
    result = erase(pipeline, concept_prompts, guide_words, preserve_prompts, config, progress, extra_rows, solve_all)
    result.extra["guides"] = guides
    return result


class UCE(Method):
    name = "uce"
    summary = "UCE (Gandikota et al., WACV 2024): closed-form edit of cross-attention keys and values."
    config_class = UCEConfig
    accepts_anchor = True
    families = ALL_FAMILIES
    default_preservation = ("attributes", "words")
    concept_types = {"style": {"anchor": ("art", "uce_sd_erase.py: --concept_type art guides to 'art'")}}

    def run(
        self, pipeline, request, config: UCEConfig, progress: Progress | None = None, control=None
    ) -> ErasureResult:
        return edit_request(pipeline, request, config, progress)  # a closed form has nothing to resume
