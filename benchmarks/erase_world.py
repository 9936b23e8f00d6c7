"""Erase "circle" from the embedded model with each method's defaults; time it and judge it.

    python benchmarks/erase_world.py [--methods esd,ablate] [--concept circle] [--seeds 8] [--first-seed 1000] [--set esd.lr=1e-3 ...]

Prints, per method: wall time of the erasure (target: at most 120 s on 2 CPU cores), iterations
per second, peak resident memory, and the judge's figures on `a <colour> <shape>` prompts: the
share still judged as the erased shape, every other shape's accuracy beside the base's, and colour
accuracy (targets: erased <= 10%, others >= 80% of base, colours >= 95%).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields


class PeakRSS:
    """The process's largest resident set while the block runs, sampled every 50 ms (Linux), so
    that each method's figure is its own and not the process's peak so far."""

    def __enter__(self):
        import threading

        self.mb, self._done = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while True:
            with open("/proc/self/status") as status:
                rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            self.mb = max(self.mb, rss / 1024)
            if self._done.wait(0.05):
                return

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-unet", choices=["shapes-unet", "shapes-mmdit"])
    parser.add_argument("--methods", default="esd,ablate")
    parser.add_argument("--concept", default="circle")
    parser.add_argument("--anchor", default="shape")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per prompt")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--preserve", default="", help="comma-separated concepts to preserve (every method)")
    parser.add_argument("--set", action="append", default=[], help="method.field=value overrides")
    parser.add_argument(
        "--profile",
        default="shapes-world",
        help="whose defaults: shapes-world (the UNet model's own), shapes-world-mmdit (the MMDiT's) or paper (what a real model gets)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch

    from erasectl.architecture import component_name, denoiser
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.judge import ClipJudge
    from erasectl.methods import get_method
    from erasectl.models import load_pipeline
    from erasectl.profiles import profile_named
    from erasectl.provenance import versions
    from erasectl.world.judging import shape_report
    from erasectl.world.vocabulary import SHAPES, SYNONYMS

    judge = ClipJudge.load()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    base = shape_report(load_pipeline(args.model), judge, seeds)
    profile = profile_named(args.profile)
    results = {
        "model": args.model,
        "machine": f"{torch.get_num_threads()} torch threads",
        "versions": versions(),
        "profile": profile.name,
        "seeds": seeds,
        "base": base,
        "methods": {},
    }
    print("base: " + ", ".join(f"{s} {base[s]['accuracy']:.2f}" for s in SHAPES))
    for method in args.methods.split(","):
        overrides = {}
        defaults = {f.name: f.default for f in fields(get_method(method).config_class)}
        for item in args.set:
            key, _, value = item.partition("=")
            scope, _, name = key.partition(".")
            if scope == method:
                field_type = type(defaults[name])
                overrides[name] = field_type(value) if field_type is not bool else value.lower() in ("1", "true")
        concepts = args.concept.split(",")
        config = build_config(method, profile, overrides, len(concepts))  # as `erasectl erase` builds it
        pipeline = load_pipeline(args.model)
        preserve = [p for p in args.preserve.split(",") if p]
        request = ErasureRequest(
            concepts,
            profile,
            args.anchor
            if get_method(method).accepts_anchor and (get_method(method).needs_anchor or args.anchor != "shape")
            else None,
            preserve=preserve,
        )
        started = time.perf_counter()
        with PeakRSS() as peak:
            checkpoint = erase_concepts(pipeline, method, request, config)
        wall = time.perf_counter() - started
        reloaded = denoiser(load_pipeline(args.model))
        prefix, base_tensors = f"{component_name(reloaded)}.", reloaded.state_dict()
        # moved by training: unequal to the base weight and to its bf16 rounding (bf16 training
        # stores rounded weights, which are not moves)
        changed = [
            ((tensor != base) & (tensor != base.to(torch.bfloat16).float())).float()
            for key, tensor in checkpoint.tensors.items()
            if key.startswith(prefix) and key[len(prefix) :] in base_tensors
            for base in [base_tensors[key[len(prefix) :]]]
        ]
        report = shape_report(pipeline, judge, seeds)
        synonyms = shape_report(pipeline, judge, seeds, nouns=SYNONYMS)
        colour = sum(report[s]["colour_accuracy"] for s in SHAPES) / len(SHAPES)
        row = {
            "config": checkpoint.recipe["config"],
            "wall_time_s": round(wall, 1),
            "iterations_per_s": round(config.steps / wall, 2) if method != "uce" else None,  # UCE: one closed-form edit
            "peak_rss_mb": round(peak.mb),
            "trained_elements_moved": round(float(torch.cat([c.flatten() for c in changed]).mean()), 4)
            if changed
            else None,
            "accuracy": {s: report[s]["accuracy"] for s in SHAPES},
            "kept_share_of_base": {s: round(report[s]["accuracy"] / max(base[s]["accuracy"], 1e-9), 3) for s in SHAPES},
            "synonym_accuracy": {s: synonyms[s]["accuracy"] for s in SHAPES},
            "colour_accuracy": round(colour, 3),
            "colour_accuracy_by_shape": {s: report[s]["colour_accuracy"] for s in SHAPES},
            "judged_as": {s: report[s]["judged_as"] for s in SHAPES},
            "extra": {
                k: v
                for k, v in checkpoint.recipe.items()
                if k.startswith("anchor_images") or k in ("guides", "preserved", "preserve")
            },
        }
        results["methods"][method] = row
        print(
            f"{method}: {row['wall_time_s']} s ({row['iterations_per_s'] or '-'} it/s), peak RSS {row['peak_rss_mb']} MB | "
            + ", ".join(f"{s} {row['accuracy'][s]:.2f}" for s in SHAPES)
            + f" | synonym {row['synonym_accuracy'][args.concept.split(',')[0].split()[-1]]:.2f} | colour {row['colour_accuracy']:.3f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
