"""Null-space closed form: erase a concept with an edit that, by construction, leaves the
cross-attention outputs of a broad prior of other words unchanged, without the user naming them.

For every cross-attention projection W0 (value, or key and value) it solves

    min_D  ||(W0 + D) C^T - W0 G^T||^2 + lam ||D||^2   subject to   D K^T = 0

where C holds the concept's text-encoder rows (the same positions as UCE), G the guide prompt's
rows aligned to them, and K the rows of the prior: the profile's vocabulary words (a broad set,
built automatically: every word of the embedded world; the tokenizer's most frequent whole words
on a real model), the empty prompt (start token and padding, what classifier-free guidance
subtracts) and, for a multi-word concept, each of its words alone (a conjunction: "blue square"
goes, "blue" and "square" stay). The constraint is kept by writing D = Y N^T with N an orthonormal
basis of the prior's near-null space (eigenvectors of K^T K / m whose eigenvalue is below
``null_threshold`` times the largest); the ridge solution in those coordinates is
Y = R Ĉ^T (Ĉ Ĉ^T + lam' I)^-1 with Ĉ = N^T C^T, R = W0 (G - C)^T and lam' = lam times the mean
squared norm of Ĉ's columns.

Where it comes from, and where it differs. SPEED (Li et al., ICLR 2026; Ouxiang-Li/SPEED,
``train_erase_null.py``) projects a UCE-style edit onto the null space of a retain set's
embeddings (a CSV of ~1,350 instance or ~1,700 artist names), filters that set to the priors the
plain edit would move most (IPF), adds perturbed copies (DPA) and keeps the start token and the
null text's token clusters fixed with a Lagrange term (IEC); AlphaEdit (Fang et al., ICLR 2025)
introduced the null-space projection for knowledge edits. This method: solves the ridge problem
directly in the null-space coordinates (no Lagrange term: the empty prompt's rows are part of K,
so their outputs are fixed by the same constraint); builds K from the model's own vocabulary
rather than a shipped list; drops words whose pooled text embedding is nearly the concept's
(distance under ``synonym_ratio`` times the median distance: "disc" when erasing "circle"), so the
prior does not protect the concept's own paraphrases; adds a multi-word concept's words; and
edits K and V by default on the embedded model (SPEED's default is V only, which real models get).

On SD3 and FLUX the edit is of ``context_embedder``, the one map that reads the text tokens alone
(its output feeds every joint-attention block's keys and values alike, so ``v`` and ``kv`` are the
same edit there), with the prior's rows in each of the family's token streams.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from erasectl.architecture import (
    component_name,
    denoiser,
    encode_prompts,
    pooled_text_embeddings,
    text_projections,
    token_rows,
    transformer_family,
)
from erasectl.errors import ConfigError
from erasectl.files import write_atomically
from erasectl.methods.base import ALL_FAMILIES, ErasureResult, Method, MethodConfig, Progress, Stopwatch, setting
from erasectl.methods.common import write_solved
from erasectl.methods.rece import with_attack_rounds
from erasectl.methods.uce import GUIDE_CHOICES, POSITIONS, choose_guides, concept_rows
from erasectl.neighbours import cache_dir, encoder_fingerprint

REFERENCE = "SPEED (Ouxiang-Li/SPEED, train_erase_null.py) argparse defaults"
GROUPS = ("v", "kv")


@dataclass
class NullSpaceConfig(MethodConfig):
    steps: int = setting(1, "Closed form: one solve (kept for a uniform recipe).", "closed form")
    lr: float = setting(1.0, "Unused by the closed form.", "closed form")
    parameter_group: str = setting(
        "v", "v: cross-attention value projections; kv: keys and values.", f"{REFERENCE}: --params V"
    )
    lamb: float = setting(
        1e-3,
        "Ridge weight, relative to the concept rows' mean squared norm in the null space.",
        f"{REFERENCE}: --retain_scale 1 over unit-scale rows; relative here",
    )
    null_threshold: float = setting(
        1e-3,
        "Eigenvalues of the prior's covariance below this share of the largest span the null space the edit may use.",
        f"{REFERENCE}: --threshold 0.1 (absolute, on SD 1.4's CLIP rows); relative here",
    )
    prior_words: int = setting(
        1000,
        "Real models: the tokenizer's most frequent whole words in the prior (the embedded model uses its whole vocabulary).",
        f"{REFERENCE}: a retain list of ~1,350 instances",
    )
    synonym_ratio: float = setting(
        0.25,
        "Prior words nearer the concept than this share of the median distance are its paraphrases and left out.",
        "erasectl",
    )
    token_positions: str = setting(
        "last", "last, concept, through-eos or to-end (as uce).", f"{REFERENCE}: the last subject token"
    )
    guide_choice: str = setting(
        "empty",
        "Without --anchor: empty, nearest-preserved or nearest-concept (as uce).",
        f"{REFERENCE}: --anchor_concepts '' (to null)",
    )
    attack_rounds: int = setting(
        0,
        "Soft-prompt attacks on the edited model whose tokens are erased too, one solve each (see rece).",
        "erasectl (SPEED has none)",
    )
    attack_steps: int = setting(100, "Optimisation steps of each in-the-loop attack.", "erasectl")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parameter_group not in GROUPS:
            raise ConfigError(f"unknown parameter group {self.parameter_group!r} for nullspace; choose v or kv")
        if self.guide_choice not in GUIDE_CHOICES:
            raise ConfigError(f"guide_choice must be one of {', '.join(GUIDE_CHOICES)}, got {self.guide_choice!r}")
        if self.token_positions not in POSITIONS:
            raise ConfigError(f"token_positions must be one of {', '.join(POSITIONS)}, got {self.token_positions!r}")
        if not self.lamb > 0 or not 0 < self.null_threshold < 1 or self.prior_words < 0 or self.synonym_ratio < 0:
            raise ConfigError(
                "lamb must be positive, null_threshold between 0 and 1, prior_words and synonym_ratio 0 or more"
            )
        if self.attack_rounds < 0 or self.attack_steps < 1:
            raise ConfigError("attack_rounds must be 0 or more and attack_steps at least 1")


def prior_vocabulary(pipeline, request, config: NullSpaceConfig) -> list[str]:
    return list(dict.fromkeys(request.profile.prior_vocabulary(pipeline, config.prior_words)))


def prior_phrases(pipeline, request, config: NullSpaceConfig, table=None) -> list[str]:
    """The prior's words: the profile's vocabulary less the concepts' own words, their near
    synonyms, --preserve-excluded words, plus each word of a multi-word concept and --preserve.
    ``table``: the vocabulary's ``vocabulary_table``, when the caller already has it."""

    vocabulary = prior_vocabulary(pipeline, request, config)
    excluded = {w for c in request.concepts for w in c.lower().split()} | {c.lower() for c in request.concepts}
    excluded |= {w.lower() for w in request.prior_exclude}
    keep = [i for i, w in enumerate(vocabulary) if w.lower() not in excluded]
    words = [vocabulary[i] for i in keep]
    if words and config.synonym_ratio > 0:
        pooled = (table or vocabulary_table(pipeline, request, vocabulary, config.token_positions))[0][keep]
        near = set()
        for centre in pooled_text_embeddings(pipeline, request.concepts):
            distances = (pooled - centre).norm(dim=1)
            near |= {
                w for w, d in zip(words, distances.tolist()) if d < config.synonym_ratio * distances.median().item()
            }
        words = [w for w in words if w not in near]
    return list(dict.fromkeys(words + list(request.preserve)))


def prior_prompt(request, phrase: str) -> str:
    return request.templates(phrase, "esd")[0].format(phrase)


def vocabulary_table(
    pipeline, request, vocabulary: list[str], positions: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled embeddings of every vocabulary word and, where the edit reads the last token only,
    its prior row; computed once per text encoder and kept in erasectl's cache (keyed by a
    fingerprint of the tokenizer and encoder weights and by the word list), as the neighbour table
    is: on a real model a thousand words through CLIP ViT-L take tens of seconds on a CPU."""
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    with_rows = positions == "last"
    key = hashlib.blake2b(
        json.dumps(
            [vocabulary, [prior_prompt(request, w) for w in vocabulary[:1]], positions, type(pipeline).__name__]
        ).encode(),
        digest_size=12,
    ).hexdigest()
    path = cache_dir().parent / "prior" / f"{encoder_fingerprint(pipeline)}-{key}.safetensors"
    if path.is_file():
        found = load_file(path)
        return found["pooled"], found.get("rows")
    pooled = pooled_text_embeddings(pipeline, vocabulary)
    tensors = {"pooled": pooled.contiguous()}
    rows = None
    if with_rows:
        prompts = [(prior_prompt(request, w), w) for w in vocabulary]
        with short_prompts(pipeline, prompts, positions):
            rows, _ = concept_rows(pipeline, [p for p, _ in prompts], [w for _, w in prompts], positions)
        tensors["rows"] = rows.contiguous()
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp)))
    return pooled, rows


def prior_token_rows(pipeline, request, config: NullSpaceConfig, prior: list[str], width: int, table) -> torch.Tensor:
    """The prior's text-encoder rows: vocabulary words from ``table`` (``vocabulary_table``) where
    it holds rows, the rest (a multi-word concept's parts, --preserve, other positions) encoded now."""
    rows, rest = [], list(prior)
    if table[1] is not None:
        vocabulary = prior_vocabulary(pipeline, request, config)
        index = {w: i for i, w in enumerate(vocabulary)}
        cached = [index[p] for p in prior if p in index]
        rows.append(table[1][cached])
        rest = [p for p in prior if p not in index]
    if rest:
        prompts = [(prior_prompt(request, p), p) for p in rest]
        with short_prompts(pipeline, prompts, config.token_positions):
            rows.append(
                concept_rows(pipeline, [p for p, _ in prompts], [w for _, w in prompts], config.token_positions)[0]
            )
    return torch.cat(rows) if rows else torch.zeros(0, width)


@contextmanager
def short_prompts(pipeline, prompts: list[tuple[str, str]], positions: str):
    """Encode ``prompts`` padded to their longest instead of the full prompt length where the rows
    used stop at the end token: the text encoders are causal, so those rows are the same (a
    thousand prior words at SD 1.5 scale then cost a few positions each, not 77)."""
    tokenizers = [
        t for t in dict.fromkeys(getattr(pipeline, n, None) for n in ("tokenizer", "tokenizer_2")) if t is not None
    ]
    if positions == "to-end":
        yield
        return
    longest = max(len(tokenizers[0](p).input_ids) for p, _ in prompts)
    saved = [t.model_max_length for t in tokenizers]
    # SD3's and FLUX's pipelines pad CLIP to their own tokenizer_max_length (T5 is not causal: left as it is)
    own = getattr(pipeline, "tokenizer_max_length", None)
    try:
        for tokenizer in tokenizers:
            tokenizer.model_max_length = min(longest, tokenizer.model_max_length)
        if own is not None:
            pipeline.tokenizer_max_length = min(longest, own)
        yield
    finally:
        for tokenizer, length in zip(tokenizers, saved):
            tokenizer.model_max_length = length
        if own is not None:
            pipeline.tokenizer_max_length = own


def null_basis(prior: torch.Tensor, threshold: float) -> torch.Tensor:
    """Orthonormal columns spanning the directions the prior rows (hardly) occupy: eigenvectors of
    their covariance with eigenvalue below ``threshold`` x the largest."""
    covariance = prior.T @ prior / len(prior)
    values, vectors = torch.linalg.eigh(covariance)
    return vectors[:, values < threshold * values.max()]


def solve(w0: torch.Tensor, erase: torch.Tensor, guide: torch.Tensor, basis: torch.Tensor, lamb: float) -> torch.Tensor:
    """W0 + Y N^T, float64: the ridge fit of W0's guide outputs from the concept rows, in the null
    space's coordinates only."""
    w0, erase, guide, basis = w0.double(), erase.double(), guide.double(), basis.double()
    if basis.shape[1] == 0:
        return w0
    residual = w0 @ (guide - erase).T  # out x n
    projected = basis.T @ erase.T  # k x n
    scale = lamb * max(float((projected**2).sum(0).mean()), 1e-12)
    gram = projected @ projected.T + scale * torch.eye(basis.shape[1], dtype=torch.float64)
    y = torch.linalg.solve(gram, (residual @ projected.T).T).T  # gram is symmetric
    return w0 + y @ basis.T


class NullSpace(Method):
    name = "nullspace"
    summary = "Null-space edit after SPEED (Li et al., ICLR 2026): UCE's edit kept off a broad prior of other words."
    config_class = NullSpaceConfig
    accepts_anchor = True
    families = ALL_FAMILIES
    concept_types = {
        "style": {"anchor": ("art", "SPEED's README: --target_concepts 'Van Gogh' --anchor_concepts 'art'")},
        "person": {"anchor": ("person", "SPEED's README: celebrities --anchor_concepts 'person'")},
        "nudity": {"token_positions": ("to-end", "SPEED's train_erase_null.py: every token for nudity")},
    }

    def run(
        self, pipeline, request, config: NullSpaceConfig, progress: Progress | None = None, control=None
    ) -> ErasureResult:
        return _run(pipeline, request, config, progress)


def _run(pipeline, request, config: NullSpaceConfig, progress: Progress | None = None) -> ErasureResult:
    """With ``attack_rounds``, what the soft-prompt attack finds is erased too (``rece.with_attack_rounds``)."""
    with torch.autocast(pipeline.device.type, enabled=False):
        prepared = _prepare(pipeline, request, config)

    def solve(extra_rows=None):
        with torch.autocast(pipeline.device.type, enabled=False):
            return _edit(pipeline, config, progress, prepared, extra_rows)

    if not config.attack_rounds:
        return solve()

    return with_attack_rounds(pipeline, request, config, prepared["guides"], solve)


@torch.no_grad()
def _prepare(pipeline, request, config: NullSpaceConfig) -> dict:
    """What every solve of one erasure shares: the guides, the concept and guide rows, the prior
    and its null-space basis (the vocabulary table read once)."""

    watch = Stopwatch()
    guides = choose_guides(
        pipeline, request.concepts, request.anchor, [], config.guide_choice, request.guide_candidates
    )
    table = vocabulary_table(pipeline, request, prior_vocabulary(pipeline, request, config), config.token_positions)
    prior = prior_phrases(pipeline, request, config, table)
    prompts, concepts, guide_words = [], [], []
    for concept in request.concepts:
        for template in request.templates(concept, "uce"):
            prompts.append(template.format(concept))
            concepts.append(concept)
            guide_words.append(guides[concept])
    erase_rows, guide_rows = concept_rows(pipeline, prompts, concepts, config.token_positions, guide_words)
    prior_rows = prior_token_rows(pipeline, request, config, prior, erase_rows.shape[1], table)
    empty = token_rows(denoiser(pipeline), encode_prompts(pipeline, [""]))[0].float()  # start token and padding
    rows = torch.cat([prior_rows, empty]).double()
    basis = null_basis(rows, config.null_threshold)
    extra = {
        "guides": guides,
        "prior": {
            "words": len(prior),
            "rows": len(rows),
            "null_dimensions": basis.shape[1],
            "width": rows.shape[1],
            "phrases": prior,
        },
        "prior_excluded": list(request.prior_exclude),
    }
    return {
        "guides": guides,
        "erase_rows": erase_rows,
        "guide_rows": guide_rows,
        "basis": basis,
        "extra": extra,
        "seconds": watch.seconds(),
    }


@torch.no_grad()
def _edit(pipeline, config: NullSpaceConfig, progress, prepared: dict, extra_rows=None) -> ErasureResult:
    watch = Stopwatch()
    erase_rows, guide_rows, basis = prepared["erase_rows"], prepared["guide_rows"], prepared["basis"]
    if extra_rows is not None:
        erase_rows, guide_rows = torch.cat([erase_rows, extra_rows[0]]), torch.cat([guide_rows, extra_rows[1]])
    net = denoiser(pipeline)
    projections = text_projections(net)
    if transformer_family(net) is None and config.parameter_group == "v":
        projections = [(n, m) for n, m in projections if n.endswith("attn2.to_v")]
    erased, base = write_solved(
        projections,
        lambda _, w0: solve(w0, erase_rows, guide_rows, basis.to(w0.device), config.lamb),
        progress,
        component_name(net),
    )
    # the shared preparation is counted once, in the first solve
    return ErasureResult(
        erased, base, [0.0], round(prepared.pop("seconds", 0.0) + watch.seconds(), 3), dict(prepared["extra"])
    )
