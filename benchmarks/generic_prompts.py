"""What the generic noun draws: the share of each shape the world judge reads in images of "a shape"
and "a <colour> shape", for the base model and erased checkpoints.

    python benchmarks/generic_prompts.py [CHECKPOINT ...] [--seeds 16] [--json out.json]

A diagnostic for issue 16: the attacks' learned token starts from the generic word, so an erasure
that leaves "a red shape" drawing the concept leaves the attack a head start.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from erasectl.generation import SamplerSettings, generate
    from erasectl.judge import ClipJudge
    from erasectl.models import load_erased_pipeline, load_pipeline
    from erasectl.provenance import versions
    from erasectl.world.judging import WORLD_BATCH_SIZE, read_attributes
    from erasectl.world.vocabulary import COLOURS

    judge = ClipJudge.load()
    prompts = ["a shape", *[f"a {colour} shape" for colour in COLOURS]]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results = {"prompts": prompts, "seeds": [seeds[0], seeds[-1]], "versions": versions(), "models": {}}
    for name in ["base", *args.checkpoints]:
        pipeline = load_pipeline() if name == "base" else load_erased_pipeline(name)
        pipeline.set_progress_bar_config(disable=True)
        items = generate(pipeline, prompts, seeds, SamplerSettings(batch_size=WORLD_BATCH_SIZE))
        counts = collections.Counter(read["shape"] for read in read_attributes(judge, [item.image for item in items]))
        results["models"][name] = {shape: round(count / len(items), 4) for shape, count in sorted(counts.items())}
        print(name, json.dumps(results["models"][name]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
