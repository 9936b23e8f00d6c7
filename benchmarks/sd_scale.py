"""Each method's cost at Stable Diffusion scale: per-iteration time and peak memory of its training
step on a randomly initialised UNet with the SD 1.5 config (timing does not depend on weights).

    python benchmarks/sd_scale.py [--methods esd,ablate,uce] [--device cpu|cuda] [--mixed_precision no|fp16|bf16]
                                  [--iterations 3] [--sample-size 16] [--json out.json]

Runs the code `erasectl erase` runs (erasectl.erasure.erase_concepts) with each method's defaults
for ``--profile`` (``paper``: what a real model gets, the default; ``shapes-world``: the embedded
world's fast settings, which earlier versions applied to every model), except where a CPU run
would take hours; every such change is printed and written to the JSON:
- ``--iterations`` training iterations (the defaults run 200-300);
- ablation draws ``--anchor-images`` anchor images (default 64) and the cost per image is reported
  on its own, since it is paid once per erasure;
- the latent size (``--sample-size``; SD 1.5 draws 64x64 latents) on the CPU.
ESD's bank of trajectories is sampled in iteration 1 and serves ``trajectory_reuse`` iterations,
so its cost is amortised over that many (as in benchmarks/esd_speed.py). UCE has no iterations:
its whole closed-form edit is timed. Each method runs in its own process, so that peak memory is
its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from esd_speed import peak_memory_mb, sd15_pipeline, timed_run  # noqa: E402

PRESERVE = ["ring", "square"]


def checkpoint_config(config) -> dict:
    from dataclasses import asdict

    return asdict(config)


def run_method(args) -> dict:
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.profiles import profile_named

    pipeline = sd15_pipeline(args.sample_size).to(args.device)
    profile = profile_named(args.profile)
    overrides = {
        "uce": {},
        "esd": {"steps": args.iterations},
        "ablate": {"steps": args.iterations, "anchor_images": args.anchor_images},
    }[args.method]
    config = build_config(args.method, profile, overrides)
    request = ErasureRequest(
        ["circle"],
        profile,
        anchor="shape" if args.method == "ablate" else None,
        preserve=PRESERVE,
        model_name="sd15-random",
    )
    started, stamps = timed_run(
        args.device,
        args.mixed_precision,
        lambda progress: erase_concepts(pipeline, args.method, request, config, progress=progress),
    )
    ended = time.perf_counter()
    row = {
        "method": args.method,
        "profile": profile.name,
        "config": overrides,
        "resolved": checkpoint_config(config),
        "peak_memory_mb": round(peak_memory_mb(args.device)),
    }
    if args.method == "uce":
        row["edit_s"] = round(ended - started, 3)
        return row
    times = [
        b - a for a, b in zip(stamps, stamps[1:])
    ]  # iterations 2.. : training only (and ablation's first holds the anchor images)
    step = sum(times) / len(times)
    first = stamps[0] - started
    if args.method == "esd" and config.mode == "faithful":  # every iteration samples its own x_t
        row["iteration_s"] = round((first + sum(times)) / (len(times) + 1), 3)
    elif args.method == "esd":
        row["iteration_s"] = round(step + (first - step) / config.trajectory_reuse, 3)
        row["bank_s"] = round(first - step, 3)
        row["bank_serves_iterations"] = config.trajectory_reuse
    else:
        row["iteration_s"] = round(step, 3)
        row["anchor_image_s"] = round((first - step) / config.anchor_images, 3)
    row["raw_iteration_s"] = [round(t, 3) for t in [first, *times]]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="esd,ablate,uce")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--iterations", type=int, default=3, help="timed training iterations (at least 2)")
    parser.add_argument(
        "--anchor-images", type=int, default=4, help="ablate: anchor images drawn [the default erasure: 64]"
    )
    parser.add_argument("--sample-size", type=int, default=None, help="latent size [cpu 16, cuda 64]")
    parser.add_argument(
        "--profile",
        choices=("paper", "shapes-world"),
        default="paper",
        help="whose defaults: paper (a real model's) or shapes-world",
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--method", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sample_size is None:
        args.sample_size = 16 if args.device == "cpu" else 64
    if args.method:
        print(json.dumps(run_method(args)))
        return

    import torch

    from erasectl.provenance import versions

    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    print(
        f"SD 1.5-config UNet (random weights, latents {args.sample_size}x{args.sample_size}), {machine}, mixed precision {args.mixed_precision}; "
        f"{args.iterations} iterations, each method's {args.profile} defaults otherwise; preserving {', '.join(PRESERVE)}"
    )
    rows = []
    for method in args.methods.split(","):
        done = subprocess.run(
            [sys.executable, __file__, "--method", method, *sys.argv[1:]], capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"{method} failed:\n{done.stderr[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        if method == "uce":
            print(
                f"  uce     closed-form edit {row['edit_s']:8.2f} s                         peak {row['peak_memory_mb']} MB"
            )
        else:
            if method == "ablate":
                extra = f"{row['anchor_image_s']:.2f} s per anchor image"
            elif "bank_s" in row:
                extra = f"bank {row['bank_s']:.1f} s per {row['bank_serves_iterations']} iterations"
            else:
                extra = "faithful: each iteration samples its own x_t"
            print(f"  {method:7s} {row['iteration_s']:8.2f} s/iteration ({extra})   peak {row['peak_memory_mb']} MB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "device": args.device,
                    "profile": args.profile,
                    "machine": machine,
                    "mixed_precision": args.mixed_precision,
                    "sample_size": args.sample_size,
                    "iterations": args.iterations,
                    "anchor_images": args.anchor_images,
                    "preserve": PRESERVE,
                    "versions": versions(),
                    "methods": rows,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
