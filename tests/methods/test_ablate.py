"""Concept ablation: its targets, written out, and its anchor prompts."""

import torch

from erasectl.methods.ablate import model_target, names_anchor, replace_anchor


def test_ablation_model_target():
    generator = torch.Generator().manual_seed(1)
    anchor, concept = torch.randn(3, 4, 4, 4, generator=generator), torch.randn(3, 4, 4, 4, generator=generator)
    torch.testing.assert_close(model_target(anchor, concept, 0.0), anchor)  # eq. 4 of Kumari et al.
    torch.testing.assert_close(model_target(anchor, concept, 0.5), anchor + 0.5 * (anchor - concept))
    assert model_target(anchor.bfloat16(), concept.bfloat16(), 0.5).dtype == torch.float32


def test_ablation_noise_target_for_epsilon_and_v():
    from diffusers import DDPMScheduler

    from erasectl.diffusion import noise_target

    generator = torch.Generator().manual_seed(2)
    clean, noise = torch.randn(4, 4, 8, 8, generator=generator), torch.randn(4, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([1, 250, 600, 999])
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)[timesteps].view(-1, 1, 1, 1)
    for kind, expected in (
        ("epsilon", noise),
        ("v_prediction", (alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * clean).float()),
    ):
        scheduler = DDPMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind
        )
        torch.testing.assert_close(noise_target(scheduler, clean, noise, timesteps), expected, rtol=1e-5, atol=1e-5)


def test_anchor_replacement_is_by_whole_word():
    assert replace_anchor("a photo of a man next to a woman", "man", "king") == "a photo of a king next to a woman"
    assert replace_anchor("a red shape, shapes", "shape", "circle") == "a red circle, shapes"
    assert names_anchor("a man", "man") and not names_anchor("a woman", "man")


def test_anchor_prompts_come_from_the_file_lines_that_name_the_anchor(tmp_path):
    import json

    from typer.testing import CliRunner

    from erasectl.cli import app

    runner = CliRunner()
    lines = tmp_path / "anchors.txt"
    lines.write_text("a red shape\na blue shape\na red circle\n")
    common = [
        "erase",
        "--concept",
        "circle",
        "--method",
        "ablate",
        "--anchor",
        "shape",
        "--steps",
        "2",
        "--anchor-images",
        "4",
        "--batch-size",
        "2",
    ]
    done = runner.invoke(app, [*common, "--anchor-prompts-file", str(lines), "--out", str(tmp_path / "run"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["anchor_images"] == 4
    lines.write_text("a red circle\na shapes parade\n")  # no line names the anchor as a word
    refused = runner.invoke(app, [*common, "--anchor-prompts-file", str(lines), "--out", str(tmp_path / "bad")])
    assert refused.exit_code == 2 and "no line of the anchor prompts file names the anchor 'shape'" in refused.output
    assert not (tmp_path / "bad").exists()


# --- the authors' anchor data (diffusers/utils.py CustomDiffusionDataset) ---------------------


def test_an_image_is_placed_or_cropped_with_the_mask_of_its_region_as_theirs():
    import numpy as np
    from PIL import Image

    from erasectl.methods.ablation_data import place

    image = Image.fromarray(np.full((64, 64, 3), 255, dtype=np.uint8))
    generator = torch.Generator().manual_seed(0)
    canvas, mask = place(image, 24, 64, 8, generator)
    region = (canvas != 0).all(dim=0)
    rows, cols = region.any(dim=1).nonzero().flatten(), region.any(dim=0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    assert region.sum() == 24 * 24 and len(rows) == len(cols) == 24  # the shrunk image, the rest empty (0)
    expected = torch.zeros(8, 8)
    expected[top // 8 + 1 : (top + 24) // 8 - 1, left // 8 + 1 : (left + 24) // 8 - 1] = 1  # one latent pixel in
    assert torch.equal(mask, expected)
    canvas, mask = place(image, 80, 64, 8, generator)
    assert canvas.shape == (3, 64, 64) and bool((canvas == 1).all()) and bool((mask == 1).all())


def test_recipes_forms_prefixes_and_masked_loss():
    from erasectl.methods.ablation_data import LARGE, PREFIXES, SMALL, concept_forms, masked_distance, recipe_for

    assert concept_forms("object", "a photo of a cat", "grumpy cat", "a photo of a grumpy cat") == [
        "a photo of a grumpy cat"
    ]
    assert concept_forms("style", "a house", "van gogh", "") == [
        "a house, in the style of van gogh",
        "in van gogh's style, a house",
        "in van gogh's style, a house",
    ]
    assert concept_forms("nudity", "a man", "nudity", "") == [
        "nudity, a man",
        "in nudity style, a man",
        "a man, nudity",
    ]
    assert recipe_for("violence") == "violence" and recipe_for("person") == recipe_for(None) == "object"
    assert PREFIXES[1:3] == SMALL and PREFIXES[3:] == LARGE
    prediction, target = torch.zeros(2, 4, 4, 4), torch.ones(2, 4, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :2, :2] = 1
    mask[1] = 1
    # the squared error summed over the region and the channels, over the region's size
    assert float(masked_distance(prediction, target, mask)) == 4.0


def test_anchor_images_are_drawn_with_dpm_solver_and_adamw_decays_the_weights(tmp_path):
    from diffusers import DPMSolverMultistepScheduler
    from tiny_models import tiny_pipeline

    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.methods.ablate import AblateConfig, generate_anchor_latents
    from erasectl.models import load_pipeline
    from erasectl.profiles import PaperProfile

    folder = tiny_pipeline(tmp_path / "sd1", "sd1")
    pipeline = load_pipeline(str(folder))
    own = pipeline.scheduler
    config = AblateConfig(anchor_images=2, anchor_steps=3, anchor_batch_size=2)
    latents, _ = generate_anchor_latents(pipeline, ["a photo of a shape"], config)
    assert pipeline.scheduler is own
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(own.config)
    generators = [torch.Generator().manual_seed(config.seed * 100_003 + i) for i in range(2)]
    expected = pipeline(
        ["a photo of a shape"] * 2,
        generator=generators,
        num_inference_steps=3,
        guidance_scale=6.0,
        output_type="latent",
    ).images
    torch.testing.assert_close(latents, expected)

    tensors = {}
    for decay in (0.0, 0.5):
        pipeline = load_pipeline(str(folder))
        settings = {"steps": 1, "lr": 1e-2, "anchor_images": 2, "anchor_steps": 2, "batch_size": 2}
        config = build_config("ablate", PaperProfile(), {**settings, "weight_decay": decay})
        request = ErasureRequest(["circle"], PaperProfile(), anchor="shape")
        tensors[decay] = erase_concepts(pipeline, "ablate", request, config).tensors
    base = load_pipeline(str(folder)).unet
    for key, decayed in tensors[0.5].items():  # AdamW: the same step, and w <- w - lr wd w first
        w0 = base.get_parameter(key[len("unet.") :])
        torch.testing.assert_close(decayed - tensors[0.0][key], -1e-2 * 0.5 * w0, rtol=1e-3, atol=1e-7)


def test_the_nudity_recipe_trains_every_attention_projection_on_their_people_prompts(tmp_path):
    from tiny_models import tiny_pipeline
    from typer.testing import CliRunner

    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.cli import app

    folder = tiny_pipeline(tmp_path / "sd1", "sd1")
    out = tmp_path / "run"
    short = ["--steps", "2", "--anchor-images", "4", "--anchor-steps", "2", "--batch-size", "4"]
    result = CliRunner().invoke(
        app,
        ["erase", "--concept", "nudity", "--method", "ablate", "--concept-type", "nudity", "--model", str(folder)]
        + ["--out", str(out), "--quiet", *short],
    )
    assert result.exit_code == 0, result.output
    checkpoint = ErasedCheckpoint.load(out / "erased.safetensors")
    recipe = checkpoint.recipe
    assert recipe["anchor"] == "people" and recipe["ablation_recipe"] == "nudity"
    config = recipe["config"]
    assert (config["parameter_group"], config["anchor_data"], config["prior_weight"]) == ("attn", "plain", 1.0)
    assert any(".attn1.to_q." in k for k in checkpoint.tensors) and any(
        ".attn2.to_out." in k for k in checkpoint.tensors
    )
    assert not any(".ff." in k or "resnets" in k for k in checkpoint.tensors)
