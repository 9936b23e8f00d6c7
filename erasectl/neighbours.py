"""Surrounding concepts found in the text encoder's embedding space, from valid phrases only.

The seed project sampled Gaussian points around a concept's embedding and found they are not
prompts at all. Here every neighbour is a phrase from a vocabulary: the tokenizer's whole-word
tokens, or a list the user gives. The Gaussian mode is kept, but each sample is snapped to its
nearest valid phrase.

The tokenizer's whole words are tens of thousands on a real CLIP vocabulary (49,408 tokens): they
are encoded once per text encoder, in batches padded to the longest word, and kept in a cache
keyed by a fingerprint of the tokenizer and the encoder's weights, so later calls read a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from erasectl.architecture import pooled_text_embeddings
from erasectl.errors import UserError
from erasectl.files import write_atomically

MODES = ("nearest", "gaussian")
CACHE_VERSION = "1"


def tokenizer_words(tokenizer, min_length: int = 3) -> list[str]:
    """Whole words of a CLIP BPE vocabulary: tokens that end a word and are made of letters."""
    words = []
    for token in tokenizer.get_vocab():
        if token.endswith("</w>"):
            word = token[: -len("</w>")]
            if len(word) >= min_length and word.isalpha():
                words.append(word)
    return sorted(set(words))


def frequent_words(tokenizer, count: int, min_length: int = 3) -> list[str]:
    """The ``count`` most frequent whole words of a CLIP BPE vocabulary: a token's id follows its
    merge's rank, and BPE merges the most frequent pairs first."""
    vocabulary = tokenizer.get_vocab()
    ranked = sorted(
        ((i, t[: -len("</w>")]) for t, i in vocabulary.items() if t.endswith("</w>")), key=lambda pair: pair[0]
    )
    return [w for _, w in ranked if len(w) >= min_length and w.isalpha()][:count]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("ERASECTL_CACHE", Path(base) / "erasectl")) / "neighbours"


@torch.no_grad()
def encoder_fingerprint(pipeline) -> str:
    """A digest of the tokenizer's vocabulary and every weight of the first text encoder."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(CACHE_VERSION.encode())
    digest.update(json.dumps(sorted(pipeline.tokenizer.get_vocab().items())).encode())
    for name, tensor in pipeline.text_encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def vocabulary_table(pipeline, progress=None) -> tuple[list[str], torch.Tensor]:
    """The tokenizer's whole words and their pooled embeddings, from the cache when it has them."""
    from safetensors.torch import load_file, save_file

    path = cache_dir() / f"{encoder_fingerprint(pipeline)}.safetensors"
    words_path = path.with_suffix(".json")
    if path.is_file() and words_path.is_file():
        return json.loads(words_path.read_text()), load_file(path)["embeddings"]
    words = tokenizer_words(pipeline.tokenizer)
    table = []
    step = 1024
    for start in range(0, len(words), step):
        table.append(pooled_text_embeddings(pipeline, words[start : start + step]))
        if progress is not None:
            progress(min(start + step, len(words)), len(words))
    embeddings = torch.cat(table) if table else torch.zeros(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(words_path, lambda tmp: tmp.write_text(json.dumps(words)))
    write_atomically(path, lambda tmp: save_file({"embeddings": embeddings.contiguous()}, str(tmp)))
    return words, embeddings


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
    if vocabulary is None:
        all_phrases, all_embeds = vocabulary_table(pipeline)
    else:
        all_phrases = list(dict.fromkeys(vocabulary))
        all_embeds = pooled_text_embeddings(pipeline, all_phrases)
    keep = [i for i, p in enumerate(all_phrases) if p.lower() not in concept_words and p.lower() != concept.lower()]
    phrases = [all_phrases[i] for i in keep]
    if len(phrases) < k:
        raise UserError(
            f"the vocabulary has only {len(phrases)} phrases besides the concept; ask for fewer neighbours or give a longer --vocabulary"
        )
    table = all_embeds[keep]
    centre = pooled_text_embeddings(pipeline, [concept])[0]
    if mode == "nearest":
        order = (table - centre).norm(dim=1).argsort(stable=True)
        return [phrases[i] for i in order[:k].tolist()]
    generator = torch.Generator().manual_seed(seed)
    chosen: list[str] = []
    for _ in range(50 * k):
        sample = torch.nn.functional.normalize(centre + sigma * torch.randn(centre.shape, generator=generator), dim=0)
        for index in (table - sample).norm(dim=1).argsort(stable=True).tolist():
            if phrases[index] not in chosen:
                chosen.append(phrases[index])
                break
        if len(chosen) == k:
            break
    return chosen
