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
