"""The MMDiT shapes world's training: a few steps make a folder plain diffusers loads and draws from."""

import numpy as np
import torch

from erasectl.assets import embedded_pipeline_dir
from erasectl.world.train import WorldTrainingConfig
from erasectl.world.train_mmdit import train_mmdit_world


def test_train_world_sd3_writes_a_stable_diffusion_3_folder_that_resumes_by_stage(tmp_path):
    from diffusers import AutoencoderKL, StableDiffusion3Pipeline

    from erasectl.models import model_profile

    config = WorldTrainingConfig(n_images=64, transformer_steps=3, transformer_batch_size=4)
    folders = train_mmdit_world(tmp_path, config)
    pipeline = StableDiffusion3Pipeline.from_pretrained(folders["pipeline"])
    # CLIP and T5 read 16 tokens each; the VAE is the UNet world's, so one judge reads both
    assert pipeline.tokenizer_max_length == 16 and pipeline.tokenizer_3.model_max_length == 16
    assert pipeline.text_encoder_3 is not None and pipeline.vae.config.shift_factor == 0.0
    unet_world_vae = AutoencoderKL.from_pretrained(embedded_pipeline_dir() / "vae")
    for name, tensor in unet_world_vae.state_dict().items():
        assert torch.equal(tensor, pipeline.vae.state_dict()[name]), name
    image = pipeline(
        "a red circle", height=32, width=32, num_inference_steps=2, max_sequence_length=16, output_type="np"
    ).images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    assert model_profile(str(folders["pipeline"])).name == "shapes-world-mmdit"
    # every stage is saved: a second run trains nothing and leaves the weights as they were
    before = (folders["pipeline"] / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    longer = WorldTrainingConfig(n_images=64, transformer_steps=4, transformer_batch_size=4)
    assert train_mmdit_world(tmp_path, longer)["pipeline"] == folders["pipeline"]
    assert (folders["pipeline"] / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert (tmp_path / "stages" / "latents.pt").is_file() and (tmp_path / "training-mmdit.json").is_file()


def test_the_shipped_mmdit_draws_what_it_is_asked_has_its_own_profile_and_its_nullspace_erases_circle(world_judge):
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.models import load_pipeline, model_profile
    from erasectl.world.judging import shape_report
    from erasectl.world.vocabulary import SHAPES

    profile = model_profile("shapes-mmdit")
    assert profile.name == "shapes-world-mmdit" and model_profile("shapes-unet").name == "shapes-world"
    assert profile.defaults("esd", {})["lr"][0] != model_profile("shapes-unet").defaults("esd", {})["lr"][0]
    seeds = [200, 201]
    base = shape_report(load_pipeline("shapes-mmdit"), world_judge, seeds)
    # the shipped model draws what it is asked ("a <colour> <shape>", its own sampler), as judged
    shape_ok = sum(base[s]["accuracy"] for s in SHAPES) / len(SHAPES)
    colour_ok = sum(base[s]["colour_accuracy"] for s in SHAPES) / len(SHAPES)
    assert shape_ok >= 0.8 and colour_ok >= 0.95, base
    pipeline = load_pipeline("shapes-mmdit")
    checkpoint = erase_concepts(
        pipeline, "nullspace", ErasureRequest(["circle"], profile), build_config("nullspace", profile, {})
    )
    # the map every token row goes through before joint attention mixes text and image
    assert {k.rsplit(".", 1)[0] for k in checkpoint.tensors} == {"transformer.context_embedder"}
    report = shape_report(pipeline, world_judge, seeds)
    assert report["circle"]["accuracy"] <= 0.1, report["circle"]
    for shape in SHAPES[1:]:  # held out: nothing preserves them; the benchmarks measure how much is kept
        assert report[shape]["accuracy"] >= 0.8 * base[shape]["accuracy"], (shape, report[shape])
