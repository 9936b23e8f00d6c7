"""Surrounding concepts found in the text encoder's embedding space, from valid phrases only.

The seed project sampled Gaussian points around a concept's embedding and found they are not
prompts at all. Here every neighbour is a phrase from a vocabulary: the tokenizer's whole-word
tokens, or a list the user gives. The Gaussian mode is kept, but each sample is snapped to its
nearest valid phrase.
"""

from __future__ import annotations

import torch

from erasectl.errors import UserError
from erasectl.evaluation import pooled_text_embeddings

MODES = ("nearest", "gaussian")


def tokenizer_words(tokenizer, min_length: int = 3) -> list[str]:
    """Whole words of a CLIP BPE vocabulary: tokens that end a word and are made of letters."""
    words = []
    for token in tokenizer.get_vocab():
        if token.endswith("</w>"):
            word = token[: -len("</w>")]
            if len(word) >= min_length and word.isalpha():
                words.append(word)
    return sorted(set(words))


def find_neighbours(
    pipeline,
    concept: str,
    k: int,
    vocabulary: list[str] | None = None,
    mode: str = "nearest",
    sigma: float = 0.3,
    seed: int = 0,
) -> list[str]:
    if k <= 0:
        raise UserError(f"--auto-surrounding must be at least 1, got {k}")
    if mode not in MODES:
        raise UserError(f"unknown neighbour mode {mode!r}; choose one of {', '.join(MODES)}")
    concept_words = set(concept.lower().split())
    phrases = [p for p in (vocabulary or tokenizer_words(pipeline.tokenizer)) if p.lower() not in concept_words and p.lower() != concept.lower()]
    if len(phrases) < k:
        raise UserError(f"the vocabulary has only {len(phrases)} phrases besides the concept; ask for fewer neighbours or give a longer --vocabulary")
    embeds = pooled_text_embeddings(pipeline, [concept, *phrases])
    centre, table = embeds[0], embeds[1:]
    if mode == "nearest":
        order = (table - centre).norm(dim=1).argsort()
        return [phrases[i] for i in order[:k].tolist()]
    generator = torch.Generator().manual_seed(seed)
    chosen: list[str] = []
    for _ in range(50 * k):
        sample = torch.nn.functional.normalize(centre + sigma * torch.randn(centre.shape, generator=generator), dim=0)
        for index in (table - sample).norm(dim=1).argsort().tolist():
            if phrases[index] not in chosen:
                chosen.append(phrases[index])
                break
        if len(chosen) == k:
            break
    return chosen
