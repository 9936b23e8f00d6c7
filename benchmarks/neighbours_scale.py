"""--auto-preserve / --auto-surrounding over a real CLIP vocabulary (49,408 tokens), on the SD 1.5
text encoder's shapes (CLIP ViT-L/14 text tower, random weights: no weights can be downloaded).

The real tokenizer: OpenAI's CLIP BPE merges, which the open-clip-torch wheel ships as
``open_clip/bpe_simple_vocab_16e6.txt.gz``; vocab.json and merges.txt are built from it the way
CLIP's own SimpleTokenizer builds its table. Pass the .gz file, or install the wheel without its
dependencies (``pip install --no-deps open-clip-torch``) so that it is found.

Goal (issue 13): the first call at most 10 minutes and 4 GB peak on 2 CPU cores; from the cache
under 2 s; the neighbours identical to an unbatched, fully padded computation on a subset.

    python benchmarks/neighbours_scale.py [--bpe FILE] [--json benchmarks/results-neighbours_scale.json]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import resource
import sys
import tempfile
import time
from pathlib import Path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters)))


def clip_tokenizer_files(bpe_gz: Path, folder: Path) -> Path:
    merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = (
        symbols
        + [s + "</w>" for s in symbols]
        + ["".join(m.split()) for m in merges]
        + ["<|startoftext|>", "<|endoftext|>"]
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def find_bpe(given: str | None) -> Path:
    if given:
        return Path(given)
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pass --bpe FILE (bpe_simple_vocab_16e6.txt.gz) or `pip install --no-deps open-clip-torch`")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def sd15_text_side(tokenizer_folder: Path):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer(
        str(tokenizer_folder / "vocab.json"), str(tokenizer_folder / "merges.txt"), model_max_length=77
    )
    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    ).eval()

    class TextSide:  # what find_neighbours reads of a pipeline
        pass

    side = TextSide()
    side.tokenizer, side.text_encoder = tokenizer, encoder
    return side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bpe", help="bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--concepts", default="car,van gogh,grumpy cat")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--subset", type=int, default=2000, help="words for the unbatched equality check")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import os

    import torch

    cache = Path(tempfile.mkdtemp(prefix="erasectl-cache-"))
    os.environ["ERASECTL_CACHE"] = str(cache)
    from erasectl.neighbours import find_neighbours, tokenizer_words, vocabulary_table
    from erasectl.provenance import versions

    side = sd15_text_side(clip_tokenizer_files(find_bpe(args.bpe), cache / "tokenizer"))
    words = tokenizer_words(side.tokenizer)
    started = time.perf_counter()
    vocabulary_table(side)
    first = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    concepts = args.concepts.split(",")
    started = time.perf_counter()
    cached = {c: find_neighbours(side, c, args.k) for c in concepts}
    from_cache = (time.perf_counter() - started) / len(concepts)

    # Unbatched and fully padded (every phrase alone, 77 positions): the neighbours among a subset.
    subset = words[:: max(1, len(words) // args.subset)][: args.subset]
    batched = {c: find_neighbours(side, c, args.k, vocabulary=subset) for c in concepts}
    with torch.no_grad():

        def alone(phrase):
            ids = side.tokenizer(
                [phrase], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            return torch.nn.functional.normalize(side.text_encoder(ids).pooler_output.float(), dim=-1)[0]

        table = torch.stack([alone(w) for w in subset])
        unbatched = {}
        for c in concepts:
            keep = [i for i, w in enumerate(subset) if w.lower() not in set(c.lower().split())]
            order = (table[keep] - alone(c)).norm(dim=1).argsort(stable=True)
            unbatched[c] = [subset[keep[i]] for i in order[: args.k].tolist()]
    results = {
        "vocabulary_tokens": len(side.tokenizer),
        "whole_words_encoded": len(words),
        "first_call_s": round(first, 1),
        "peak_rss_mb": round(peak_mb),
        "from_cache_s_per_concept": round(from_cache, 3),
        "cache_file_mb": round(sum(f.stat().st_size for f in (cache / "neighbours").iterdir()) / 2**20, 1),
        "neighbours": cached,
        "subset_words": len(subset),
        "subset_identical_to_unbatched": batched == unbatched,
        "goals": {"first_call_s": 600, "peak_rss_mb": 4096, "from_cache_s": 2},
        "machine": f"{os.cpu_count()} CPU cores",
        "versions": versions(),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
