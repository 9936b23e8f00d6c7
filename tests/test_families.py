"""Every method runs on tiny, randomly initialised pipelines of the SD families, built from configs."""

import pytest
import torch
from typer.testing import CliRunner

from erasectl.cli import app
from erasectl.world.tokenizer import write_tokenizer

runner = CliRunner()


def _tiny_pipeline(folder, family: str):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(folder / "tok"))
    sd2 = family == "sd2"
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4) if sd2 else 8,
        use_linear_projection=sd2,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=16, sample_size=16)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            hidden_act="gelu" if sd2 else "quick_gelu", projection_dim=32,
        )
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction" if sd2 else "epsilon")
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder / family)
    return folder / family


@pytest.fixture(scope="module", params=["sd1", "sd2"])
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
