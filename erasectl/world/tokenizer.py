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


def write_tokenizer(folder: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the configs; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
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
