"""The null-space closed form at SD 1.5 scale on a CPU: one concept, and ten at once.

    python benchmarks/nullspace_scale.py [--bpe FILE] [--concepts 10] [--json benchmarks/results-nullspace_scale.json]

A randomly initialised UNet with SD 1.5's config and the SD 1.5 text encoder's shapes, with the
real CLIP BPE tokenizer (built from the file the open-clip-torch wheel ships, as
benchmarks/neighbours_scale.py does), so the prior is the real vocabulary's 1,000 most frequent
whole words. Runs `erase_concepts` with the paper profile's defaults (what a real model gets: V
only, the last token, the empty guide). Timing does not depend on the weights. The prior is
encoded on the first run and read from erasectl's cache after (a fresh cache folder here). Goals
(issue 15): under 5 s per concept; 10 concepts at once under 10 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from neighbours_scale import clip_tokenizer_files, find_bpe, sd15_text_side  # noqa: E402

CONCEPTS = ["car", "dog", "church", "parachute", "guitar", "tree", "horse", "airplane", "bridge", "clock"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bpe", default=None)
    parser.add_argument("--concepts", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from erasectl.checkpoint import assign_tensors, component_tensors
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.profiles import PaperProfile
    from erasectl.provenance import versions

    with tempfile.TemporaryDirectory() as tmp:
        side = sd15_text_side(clip_tokenizer_files(find_bpe(args.bpe), Path(tmp) / "tokenizer"))
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=16, cross_attention_dim=768)
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
            text_encoder=side.text_encoder,
            tokenizer=side.tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        profile = PaperProfile()
        keys = [
            f"unet.{n}.weight" for n, _ in pipeline.unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))
        ]
        originals = {k: v.clone() for k, v in component_tensors(pipeline, keys).items()}
        rows = []
        import os

        os.environ["ERASECTL_CACHE"] = str(Path(tmp) / "cache")  # start cold: the first run encodes the prior
        for label, concepts in (
            ("first run (prior encoded and cached)", CONCEPTS[:1]),
            ("cached prior", CONCEPTS[:1]),
            ("cached prior", CONCEPTS[: args.concepts]),
        ):
            config = build_config("nullspace", profile, {})
            started = time.perf_counter()
            checkpoint = erase_concepts(
                pipeline, "nullspace", ErasureRequest(concepts, profile, model_name="sd15-random"), config
            )
            seconds = time.perf_counter() - started
            assign_tensors(pipeline, originals)  # the base weights back for the next run
            rows.append(
                {
                    "run": label,
                    "concepts": len(concepts),
                    "seconds": round(seconds, 2),
                    "prior": {k: v for k, v in checkpoint.recipe["prior"].items() if k != "phrases"},
                    "changed_tensors": len(checkpoint.tensors),
                }
            )
            print(
                f"{label}: {len(concepts):2d} concept(s): {seconds:.2f} s, prior {checkpoint.recipe['prior']['words']} words, "
                f"null space {checkpoint.recipe['prior']['null_dimensions']} of {checkpoint.recipe['prior']['width']} dimensions",
                flush=True,
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory {peak:.0f} MB")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": f"CPU, {torch.get_num_threads()} torch threads",
                    "rows": rows,
                    "peak_memory_mb": round(peak),
                    "versions": versions(),
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
