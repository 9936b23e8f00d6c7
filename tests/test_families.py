"""Every method runs on tiny, randomly initialised pipelines of the SD families, built from configs."""

import json

import pytest
import torch
from typer.testing import CliRunner

from erasectl.cli import app
from erasectl.world.tokenizer import write_tokenizer

runner = CliRunner()


def _tiny_pipeline(folder, family: str):
    """A randomly initialised pipeline with the family's structure at a tiny width: SD 2.x has
    linear projections, v-prediction and GELU; SDXL two text encoders (the second with a
    projection for the pooled embedding) and added size/crop conditioning."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(folder / "tok"))
    sd2, xl = family == "sd2", family == "sdxl"

    def text_config(width):
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            hidden_act="quick_gelu" if family == "sd1" else "gelu", projection_dim=width,
        )

    # SDXL's two encoders differ in width (768 and 1280 in the real one; single-file loading
    # tells them apart by it), and the UNet attends to both, concatenated.
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D") if not xl else ("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D") if not xl else ("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32 + 48 if xl else 32,
        attention_head_dim=(2, 4) if sd2 or xl else 8,
        use_linear_projection=sd2 or xl,
        norm_num_groups=16,
        **(dict(addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=48 + 6 * 8, transformer_layers_per_block=(1, 2)) if xl else {}),
    )
    vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=16, sample_size=16)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction" if sd2 else "epsilon")
    if xl:
        pipeline = StableDiffusionXLPipeline(
            vae=vae, text_encoder=CLIPTextModel(text_config(32)), text_encoder_2=CLIPTextModelWithProjection(text_config(48)),
            tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
        )
    else:
        pipeline = StableDiffusionPipeline(vae=vae, text_encoder=CLIPTextModel(text_config(32)), tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder / family)
    return folder / family


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def tiny_family(request, tmp_path_factory):
    return request.param, _tiny_pipeline(tmp_path_factory.mktemp(request.param), request.param)


@pytest.mark.parametrize(
    "method_args",
    [
        ["--method", "esd", "--steps", "2", "--ddim-steps", "4"],
        ["--method", "esd", "--mode", "faithful", "--steps", "2", "--ddim-steps", "4"],
        ["--method", "esd", "--parameter-group", "esd-u", "--steps", "2", "--ddim-steps", "4"],
        ["--method", "ablate", "--anchor", "shape", "--steps", "2", "--anchor-images", "2"],
        ["--method", "uce", "--preserve", "ring"],
    ],
    ids=["esd-x", "esd-faithful", "esd-u", "ablate", "uce"],
)
def test_every_method_runs_on_each_family(tiny_family, method_args, tmp_path):
    family, folder = tiny_family
    out = tmp_path / "run"
    result = runner.invoke(app, ["erase", "--concept", "circle", "--model", str(folder), "--out", str(out), "--quiet", *method_args])
    assert result.exit_code == 0, result.output
    from erasectl.models import load_erased_pipeline

    erased = load_erased_pipeline(out / "erased.safetensors")
    changed = erased.erasectl_checkpoint.tensors
    assert changed and all(k.startswith("unet.") for k in changed)
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(folder / "unet").state_dict()
    assert any(not torch.equal(base[k[len("unet."):]], t) for k, t in changed.items()), f"{family}: nothing changed"


# The key each family's original code reads its (last) text encoder from.
ORIGINAL_TEXT_KEYS = {
    "sd1": "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    "sd2": "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight",
    "sdxl": "conditioner.embedders.1.model.text_projection",
}


def test_single_file_round_trip_on_each_family(tiny_family, tmp_path):
    """An erasure exported as one original-layout file reloads bit-identically through diffusers'
    from_single_file (export verifies it), and erasectl takes that file back as --model."""
    from safetensors import safe_open

    family, folder = tiny_family
    out = tmp_path / "run"
    result = runner.invoke(app, ["erase", "--concept", "circle", "--method", "uce", "--preserve", "ring", "--model", str(folder), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(out / "erased.safetensors"), "--format", "single-file", "--out", str(tmp_path / "file"), "--json"])
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert exported["verification"]["max_pixel_difference"] == 0
    with safe_open(exported["file"], "pt") as handle:
        keys = set(handle.keys())
        architecture = handle.metadata()["modelspec.architecture"]
    assert ORIGINAL_TEXT_KEYS[family] in keys
    assert {"sd1": "v1", "sd2": "v2", "sdxl": "xl"}[family] in architecture
    if family == "sdxl":
        assert "model.diffusion_model.label_emb.0.0.weight" in keys
    again = runner.invoke(app, ["erase", "--concept", "triangle", "--method", "uce", "--model", exported["file"], "--model-config", str(folder), "--out", str(tmp_path / "again"), "--quiet"])
    assert again.exit_code == 0, again.output
