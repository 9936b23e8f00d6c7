"""The shapes world's tokenizer, in the files transformers' ``CLIPTokenizer`` reads.

CLIP's byte-pair encoding joins characters by ranked merges. Every merge here joins one character
onto a word-final piece (``"e" + "d</w>" -> "ed</w>"``), so merging can only grow a word from its
end: every world word ends as one token, and any other word falls back to letters, never to
``<|unk|>`` in the middle of a world word. Unknown characters become the unknown token.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from erasectl.world.vocabulary import WORLD_WORDS

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
MODEL_MAX_LENGTH = 77
_CHARACTERS = string.ascii_lowercase + string.digits + ",.'-!?"


def build_vocabulary(words: tuple[str, ...] = WORLD_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tokens: list[str] = []
    for ch in _CHARACTERS:
        tokens += [ch, ch + "</w>"]
    merges: list[tuple[str, str]] = []
    for word in words:
        suffix = word[-1] + "</w>"
        for ch in reversed(word[:-1]):
            pair = (ch, suffix)
            suffix = ch + suffix
            if pair not in merges:
                merges.append(pair)
                tokens.append(suffix)
    tokens += [UNK, BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_tokenizer(folder: str | Path, max_length: int = MODEL_MAX_LENGTH) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the configs; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": EOS}, indent=2) + "\n"
    )
    return folder


def t5_tokenizer(words: tuple[str, ...] = WORLD_WORDS, max_length: int = 512):
    """A T5 tokenizer built in memory (no download): a ``tokenizers`` Unigram model over the given
    words and the letters, SentencePiece's "\u2581" word marks, and "</s>" after every text, as
    T5's own tokenizer adds it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{w}", -2.0) for w in sorted(set(words))]
    pieces += [(c, -6.0) for c in "\u2581" + _CHARACTERS]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=max_length,
    )
