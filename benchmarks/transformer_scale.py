"""The closed forms on SD3.5-medium-shaped weights on a CPU: seconds and peak memory.

    python benchmarks/transformer_scale.py [--bpe FILE] [--json benchmarks/results-transformer_scale.json]

A randomly initialised ``SD3Transformer2DModel`` in SD3.5-medium's config (24 MMDiT blocks, the
first 13 with dual attention, width 1536, 2.5B parameters) and both CLIP text encoders in their
real shapes (CLIP-L 768 x 12 layers, CLIP-G 1280 x 32 layers, with projections), with the real CLIP
BPE tokenizer (built from the file the open-clip-torch wheel ships, as benchmarks/neighbours_scale.py
does), run as SD3.5 without T5: a random 4.7B-parameter T5-XXL does not fit beside them in this
machine's 24 GB in fp32, and the solve's cost does not depend on which encoder made the rows (T5's
rows are as wide as the padded CLIP rows, 4096). Runs ``erase_concepts`` with the paper profile's
defaults (what a real model gets) for UCE, RECE and nullspace. Timing does not depend on the weights.
Goal (issue 36): a closed-form erasure under 10 s on this CPU.

``--family flux``: FLUX.1-dev's transformer at its real width (3072) with one dual-stream and one
single-stream block of its 19 and 38 (the closed forms edit ``context_embedder`` and the pooled
text embedder, whose shapes the block count does not change), CLIP-L in its real shape, and T5
at T5-XXL's width (4096, 64 heads, FF 10240) with one of its 24 layers, its tokenizer built in
memory: the solve is FLUX's; T5's encoding is 1/24 of T5-XXL's, which the results say.
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

SD35_MEDIUM = {  # stabilityai/stable-diffusion-3.5-medium, transformer/config.json
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 24, "attention_head_dim": 64,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "out_channels": 16, "pos_embed_max_size": 384,
    "dual_attention_layers": tuple(range(13)), "qk_norm": "rms_norm",
}  # fmt: skip


def clip(width: int, layers: int, heads: int, tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            projection_dim=width,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
    )


def sd35_medium_pipeline(bpe: Path, folder: Path):
    """SD3.5-medium's transformer and both CLIP encoders in their real shapes, randomly initialised
    (seed 0), with the real CLIP tokenizer built in ``folder``; no T5; a stand-in VAE never run."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTokenizer

    files = clip_tokenizer_files(bpe, folder / "tokenizer")
    tokenizer = CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    pipeline = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**SD35_MEDIUM),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=AutoencoderKL(block_out_channels=(32,), latent_channels=16, norm_num_groups=32),
        text_encoder=clip(768, 12, 12, tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=clip(1280, 32, 20, tokenizer),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipeline.vae_scale_factor = 8  # the real VAE's
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def flux_dev_pipeline(bpe: Path, folder: Path, double: int = 1, single: int = 1):
    """FLUX.1-dev at its real width with ``double`` and ``single`` blocks of its 19 and 38 (see the
    module docstring), randomly initialised."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from erasectl.world.tokenizer import t5_tokenizer

    side = sd15_text_side(clip_tokenizer_files(bpe, folder / "tokenizer"))  # FLUX's CLIP-L is SD 1.5's
    tokenizer, clip_l = side.tokenizer, side.text_encoder
    t5_tok = t5_tokenizer("a an of the photo picture painting drawing car dog church cat vehicle art".split())
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=32128,
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_layers=1,
            num_heads=64,
            feed_forward_proj="gated-gelu",
            pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
        )  # fmt: skip
    )
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=double, num_single_layers=single, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    )  # fmt: skip
    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True),
        vae=AutoencoderKL(block_out_channels=(32,), latent_channels=16, norm_num_groups=32),
        text_encoder=clip_l, tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer,
    )  # fmt: skip
    pipeline.vae_scale_factor = 8  # the real VAE's
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bpe", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--methods", default="uce,rece,nullspace")
    parser.add_argument("--family", default="sd3", choices=("sd3", "flux"))
    args = parser.parse_args()

    from erasectl.checkpoint import assign_tensors, component_tensors
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.profiles import PaperProfile
    from erasectl.provenance import versions

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        build = sd35_medium_pipeline if args.family == "sd3" else flux_dev_pipeline
        pipeline = build(find_bpe(args.bpe), Path(tmp))
        transformer = pipeline.transformer
        built = time.perf_counter() - started
        parameters = sum(p.numel() for p in transformer.parameters())
        keys = ["transformer.context_embedder.weight", "transformer.time_text_embed.text_embedder.linear_1.weight"]
        originals = {k: v.clone() for k, v in component_tensors(pipeline, keys).items()}
        rows = []
        for method in args.methods.split(","):
            config = build_config(method, PaperProfile(), {})
            request = ErasureRequest(["car"], PaperProfile(), model_name=f"{args.family}-shaped")
            started = time.perf_counter()
            checkpoint = erase_concepts(pipeline, method, request, config)
            seconds = time.perf_counter() - started
            assign_tensors(pipeline, originals)  # the next method starts from the same weights
            rows.append({"method": method, "seconds": round(seconds, 2), "edited_tensors": sorted(checkpoint.tensors)})
            print(f"{method}: {seconds:.2f} s, {len(checkpoint.tensors)} tensors edited", flush=True)
            write(
                args.json, parameters, built, rows, versions(), args.family
            )  # after each method: a slow one leaves the others'


def write(path, parameters, built, rows, found_versions, family: str = "sd3") -> None:
    result = {
        "benchmark": {
            "sd3": "closed forms on SD3.5-medium-shaped weights (random init, fp32, no T5), CPU",
            "flux": "closed forms on FLUX.1-dev's text maps at real shapes (1+1 blocks, T5 at XXL width with 1 of 24 layers; random init, fp32), CPU",
        }[family],
        "transformer_parameters": parameters,
        "build_seconds": round(built, 1),
        "runs": rows,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "goal": "a closed-form erasure under 10 s",
        "versions": found_versions,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "versions"}, indent=1))
    if path:
        Path(path).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
