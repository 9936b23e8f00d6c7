"""Where an ESD iteration's time goes, and what each of fast mode's shortcuts saves.

    python benchmarks/esd_speed.py [--model embedded|sd15] [--device cpu|cuda] [--mixed_precision no|fp16|bf16]
                                   [--iterations 4] [--variants all|ends|fast] [--gradient-checkpointing]
                                   [--erase] [--json out.json]

Runs ESD's training loop (erasectl.methods.esd.erase, the code `erasectl erase` runs) with the
shortcuts switched on one at a time, from the straightforward iteration (fresh x_t sampled for
every iteration, one UNet call per text condition, autograd through every weight, explicit
attention) to fast mode. Per-iteration time is read from the loop's own progress callback:
iteration 1 of a variant that reuses trajectories includes sampling the bank, which then serves
``trajectory_reuse`` iterations, so its cost is amortised over that many.

``--model sd15`` builds a randomly initialised pipeline with Stable Diffusion 1.5's UNet and text
encoder configs (timing does not depend on weight values); on a CPU its latents default to 32x32
(256 px) and the trajectories to 10 DDIM steps so that a run takes minutes, and the output says so.
``--erase`` (embedded model) also runs both ends for the full default erasure and judges them, to
show the shortcuts leave the erasure unchanged within noise.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, replace

VARIANTS = {
    "straightforward": dict(
        reuse_trajectories=False, batched_calls=False, group_gradients_only=False, fused_attention=False
    ),
    "+ gradients for the group only": dict(
        reuse_trajectories=False, batched_calls=False, group_gradients_only=True, fused_attention=False
    ),
    "+ fused attention (SDPA)": dict(
        reuse_trajectories=False, batched_calls=False, group_gradients_only=True, fused_attention=True
    ),
    "+ one batched UNet call": dict(
        reuse_trajectories=False, batched_calls=True, group_gradients_only=True, fused_attention=True
    ),
    "+ trajectory bank reuse (= fast)": dict(
        reuse_trajectories=True, batched_calls=True, group_gradients_only=True, fused_attention=True
    ),
}


def sd15_pipeline(sample_size: int):
    """Random weights in SD 1.5's shapes: UNet (860M), CLIP ViT-L/14 text encoder; a small VAE
    stands in, since ESD never decodes."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from erasectl.assets import embedded_pipeline_dir

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(embedded_pipeline_dir() / "tokenizer")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(sample_size=sample_size, cross_attention_dim=768)  # the defaults are SD 1.x's
    vae = AutoencoderKL(block_out_channels=(32,), latent_channels=4, norm_num_groups=32)
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_run(device: str, mixed_precision: str, run) -> tuple[float, list[float]]:
    """``run(progress)`` under the chosen autocast: its start time and the end of each iteration."""
    import contextlib

    import torch

    stamps = []
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
    autocast = torch.autocast(device, dtype=dtype) if dtype else contextlib.nullcontext()

    def progress(done, total, info):
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    started = time.perf_counter()
    with autocast:
        run(progress)
    return started, stamps


def run_variant(args) -> dict:
    """One variant in this process (so that its peak memory is its own)."""
    from erasectl.methods import esd
    from erasectl.models import load_pipeline

    if args.model == "sd15":
        pipeline = sd15_pipeline(args.sample_size).to(args.device)
    else:
        pipeline = load_pipeline(device=args.device)
    if args.gradient_checkpointing:
        pipeline.unet.enable_gradient_checkpointing()
    config = replace(fast_settings(), steps=args.iterations, **json.loads(args.config))
    shortcuts = esd.Shortcuts(**VARIANTS[args.variant])
    started, stamps = timed_run(
        args.device,
        args.mixed_precision,
        lambda progress: esd.erase(pipeline, ["circle"], config, ["a circle"], progress=progress, shortcuts=shortcuts),
    )
    times = [b - a for a, b in zip([started, *stamps[:-1]], stamps)]
    if shortcuts.reuse_trajectories:
        # Iteration 1 sampled the bank; later ones only train. A bank serves trajectory_reuse iterations.
        step = sum(times[1:]) / len(times[1:])
        per_iteration = step + (times[0] - step) / config.trajectory_reuse
    else:
        per_iteration = sum(times) / len(times)
    return {
        "variant": args.variant,
        "iteration_s": round(per_iteration, 4),
        "raw_iteration_s": [round(t, 4) for t in times],
        "peak_memory_mb": round(peak_memory_mb(args.device)),
    }


def fast_settings():
    """The settings fast mode was built and measured with: the embedded world's ESD defaults
    (batch 8, 25 DDIM steps, a bank reused 10 iterations), which are also applied at SD scale
    here so that the shortcuts are compared on the same work."""
    from erasectl.erasure import build_config
    from erasectl.world.profile import WorldProfile

    return build_config("esd", WorldProfile(), {})


def judged_erasure(mode: str) -> dict:
    """A full default ESD erasure of circle in ``mode``, judged on 8 seeds x 4 colours per shape."""
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.judge import ClipJudge
    from erasectl.models import load_pipeline
    from erasectl.world.judging import shape_report
    from erasectl.world.profile import WorldProfile

    pipeline = load_pipeline()
    started = time.perf_counter()
    erase_concepts(
        pipeline, "esd", ErasureRequest(["circle"], WorldProfile()), build_config("esd", WorldProfile(), {"mode": mode})
    )
    wall = time.perf_counter() - started
    report = shape_report(pipeline, ClipJudge.load(), list(range(1000, 1008)))
    return {
        "mode": mode,
        "wall_time_s": round(wall, 1),
        "accuracy": {s: r["accuracy"] for s, r in report.items()},
        "colour_accuracy": round(sum(r["colour_accuracy"] for r in report.values()) / len(report), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("embedded", "sd15"), default="embedded")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per variant (at least 2)")
    parser.add_argument("--sample-size", type=int, default=None, help="sd15 latent size [cpu 32, cuda 64]")
    parser.add_argument(
        "--config", default=None, help="JSON overrides of ESDConfig [sd15 on cpu: batch 2, 10 DDIM steps]"
    )
    parser.add_argument(
        "--variants",
        choices=("all", "ends", "fast"),
        default="all",
        help="ends: only straightforward and fast; fast: only fast (for slow runs)",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute the UNet's activations in the backward pass (as erase --gradient-checkpointing)",
    )
    parser.add_argument("--erase", action="store_true", help="embedded: full erasures, straightforward vs fast, judged")
    parser.add_argument("--json", default=None)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sample_size is None:
        args.sample_size = 32 if args.device == "cpu" else 64
    if args.config is None:
        args.config = json.dumps(
            {"batch_size": 2, "ddim_steps": 10} if args.model == "sd15" and args.device == "cpu" else {}
        )
    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    import torch

    from erasectl.provenance import versions

    config = {**asdict(fast_settings()), **json.loads(args.config)}
    machine = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    print(
        f"ESD iteration on {args.model}{f' (latents {args.sample_size}x{args.sample_size})' if args.model == 'sd15' else ''}, {machine}, "
        f"mixed precision {args.mixed_precision}{', gradient checkpointing' if args.gradient_checkpointing else ''}; batch {config['batch_size']}, {config['ddim_steps']} DDIM steps, bank reused {config['trajectory_reuse']} iterations"
    )
    rows = []
    chosen = {"all": list(VARIANTS), "ends": [list(VARIANTS)[0], list(VARIANTS)[-1]], "fast": [list(VARIANTS)[-1]]}[
        args.variants
    ]
    for variant in chosen:
        command = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{variant} failed:\n{done.stderr[-2000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        versus = (
            f"x{rows[0]['iteration_s'] / row['iteration_s']:5.2f} vs straightforward"
            if chosen[0] == "straightforward"
            else " " * 25
        )
        print(f"  {variant:34s} {row['iteration_s']:8.3f} s/iteration  {versus}   peak {row['peak_memory_mb']} MB")
    results = {
        "model": args.model,
        "device": args.device,
        "machine": machine,
        "mixed_precision": args.mixed_precision,
        "gradient_checkpointing": args.gradient_checkpointing,
        "config": config,
        "sample_size": args.sample_size if args.model == "sd15" else None,
        "versions": versions(),
        "variants": rows,
        "speedup": round(rows[0]["iteration_s"] / rows[-1]["iteration_s"], 2)
        if chosen[0] == "straightforward" and len(rows) > 1
        else None,
    }
    if args.erase:
        results["erasures"] = [judged_erasure(mode) for mode in ("straightforward", "fast")]
        for row in results["erasures"]:
            print(
                f"  full erasure, {row['mode']:15s} {row['wall_time_s']:7.1f} s | "
                + ", ".join(f"{s} {a:.2f}" for s, a in row["accuracy"].items())
                + f" | colour {row['colour_accuracy']:.3f}"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
