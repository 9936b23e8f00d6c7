"""The attacks that skip the prompt: relearn, inversion and compose."""

import json

import numpy as np
import pytest
import torch
from tiny_models import tiny_pipeline, tiny_transformer_pipeline
from typer.testing import CliRunner

from erasectl.architecture import encode_images, encode_prompts
from erasectl.attacks import AttackConfig
from erasectl.cli import app
from erasectl.generation import SamplerSettings, generate
from erasectl.models import load_pipeline
from erasectl.prompt_free import _ddim_move, changed, ddim_draw, ddim_invert, int8_weights, inversion, relearn
from erasectl.provenance import pipeline_modules, weights_sha256
from erasectl.world.profile import WorldProfile
from erasectl.world.protocol import world_protocol

runner = CliRunner()


@pytest.mark.parametrize("family", ["sd1", "sd2", "sd3"])
def test_each_sampler_step_lands_where_the_true_output_says(family, tmp_path):
    """With the denoiser's true output for a known clean latent and noise (eps, v or a flow's
    velocity), one deterministic step from any level lands exactly on the other level's latent."""
    folder = tiny_pipeline(tmp_path, family) if family != "sd3" else tiny_transformer_pipeline(tmp_path, "sd3")
    pipeline = load_pipeline(str(folder))
    generator = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    flow = family == "sd3"

    def at(level):
        if flow:
            return (1 - level) * clean + level * noise, noise - clean
        a = torch.tensor(level)
        latent = a.sqrt() * clean + (1 - a).sqrt() * noise
        return latent, (a.sqrt() * noise - (1 - a).sqrt() * clean if family == "sd2" else noise)

    for level, to_level in ((0.9, 0.3), (0.3, 0.9), (0.05, 0.6)):
        latent, output = at(level)
        moved = _ddim_move(pipeline, latent, output, level, to_level)
        assert torch.allclose(moved, at(to_level)[0], atol=1e-5), (family, level, to_level)


@pytest.mark.parametrize("model", ["shapes-unet", "shapes-mmdit"])
def test_inverting_and_redrawing_with_the_base_gives_back_its_images(model, world_judge):
    """DDIM inversion (eps UNet) and the backward Euler flow (MMDiT) under the empty prompt, then
    the same sampler forward: the base model's own pictures come back, judged as what they were."""
    pipeline = load_pipeline(model)
    protocol = world_protocol("circle", None, None, None)
    items = generate(pipeline, protocol.prompt_sets()[0].prompts, [0, 1], SamplerSettings(steps=25))
    found, redrawn = inversion(pipeline, items, AttackConfig(), world_judge, protocol, "circle")
    assert found["attack_success"] >= 0.75 and len(redrawn) == len(items), found
    # the round trip in latents, too: close, not just the same class
    pixels = torch.stack([torch.from_numpy(np.asarray(i.image, dtype="float32")) for i in items[:4]])
    with torch.no_grad():
        latents = encode_images(pipeline.vae, pixels.permute(0, 3, 1, 2) / 127.5 - 1, torch.Generator().manual_seed(0))
        conditioning = encode_prompts(pipeline, [""] * 4)
        back = ddim_draw(pipeline, ddim_invert(pipeline, latents, conditioning, 25), conditioning, 25)
    error = float((back - latents).norm() / latents.norm())
    assert error < 0.15, f"{model}: the round trip moved the latents by {error:.3f} of their norm"


def test_relearn_judges_after_each_step_count_and_leaves_the_model_as_it_was(world_judge):
    pipeline = load_pipeline()
    protocol = world_protocol("circle", None, None, None)
    prompts = protocol.prompt_sets()[0].prompts
    before = weights_sha256(pipeline_modules(pipeline))
    latents = torch.randn(8, 4, 4, 4)
    which = [i % len(prompts) for i in range(8)]
    calls = []

    def judge_now():
        calls.append(1)
        items = generate(pipeline, prompts, [0], SamplerSettings(steps=5))
        return 0.25, items

    config = AttackConfig(relearn_steps=(3, 1), batch_size=4)
    found, items = relearn(pipeline, latents, which, prompts, config, judge_now, None, 0.0, 1e-3)
    assert [p["steps"] for p in found["curve"]] == [0, 1, 3] and len(calls) == 2 and len(found["losses"]) == 3
    assert found["steps_to_half"] is None and found["lr"] == 1e-3
    assert weights_sha256(pipeline_modules(pipeline)) == before
    assert not any("lora" in name for name, _ in pipeline.unet.named_parameters())


@pytest.mark.parametrize("change", ["bf16", "fp16", "int8"])
def test_each_later_change_is_made_and_undone(change):
    pipeline = load_pipeline()
    before = weights_sha256(pipeline_modules(pipeline))
    with changed(pipeline, change, {}, "square", WorldProfile()):
        during = weights_sha256(pipeline_modules(pipeline))
        if change != "int8":
            assert pipeline.unet.dtype == (torch.bfloat16 if change == "bf16" else torch.float16)
    assert during != before and weights_sha256(pipeline_modules(pipeline)) == before
    assert pipeline.unet.dtype == torch.float32


def test_int8_weights_round_each_output_channel_to_255_levels():
    layer = torch.nn.Linear(16, 4)
    original = layer.weight.detach().clone()
    int8_weights(torch.nn.Sequential(layer))
    step = original.abs().amax(dim=1, keepdim=True) / 127
    assert ((layer.weight - original).abs() <= step / 2 + 1e-7).all()
    assert all(len(torch.unique(row)) <= 255 for row in layer.weight)


def test_attack_cli_relearns_with_its_plot_and_pins_its_judge(uce_circle_checkpoint, tmp_path):
    erased = uce_circle_checkpoint
    common = ["attack", "--checkpoint", str(erased), "--n-per-prompt", "1", "--json"]
    relearned = runner.invoke(
        app, [*common, "--method", "relearn", "--relearn-steps", "2,4", "--out", str(tmp_path / "r")]
    )
    assert relearned.exit_code == 0, relearned.output
    summary = json.loads(relearned.stdout)
    assert [p["steps"] for p in summary["details"]["curve"]] == [0, 2, 4] and summary["attack_success_interval95"]
    assert (tmp_path / "r" / "relearn.png").stat().st_size > 1000 and (tmp_path / "r" / "grid.png").exists()
    manifest = summary["manifest"]  # attack.json pins its judge and checkpoint as metrics.json does
    assert len(manifest["judge"]["weights_sha256"]) == 64 and list(manifest["checkpoints"]) == [summary["checkpoint"]]
    bad = runner.invoke(app, [*common, "--method", "relearn", "--relearn-steps", "two", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "--relearn-steps" in bad.output
    bad = runner.invoke(app, [*common, "--method", "compose", "--compose", "fp8", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "compose changes are" in bad.output


def test_evaluate_runs_the_attacks_that_skip_the_prompt_and_gates_on_them(uce_circle_checkpoint, tmp_path):
    erased = uce_circle_checkpoint
    args = [
        "evaluate",
        "--checkpoint",
        str(erased),
        "--n-per-prompt",
        "1",
        "--steps",
        "5",
        "--attack",
        "inversion,compose",
    ]
    result = runner.invoke(app, [*args, "--max-attack-success", "1", "--out", str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    rows = {r["attack"]: r for r in metrics["tables"]["attacks"]}
    assert set(rows) == {"inversion", "compose"} and all(r["attack_success_interval95"] for r in rows.values())
    assert rows["compose"]["note"].startswith("bf16 ") and "erase (square)" in rows["compose"]["note"]
    assert [c["change"] for c in rows["compose"]["details"]["changes"]] == ["bf16", "fp16", "int8", "erase"]
    assert [g["gate"] for g in metrics["gates"]] == ["max-attack-success"] * 2 and all(
        g["passed"] for g in metrics["gates"]
    )
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Attacks: inversion " in report.split("## Verdict")[1] and "| what it found |" in report


@pytest.mark.parametrize("family", ["flux-dev"])
def test_flux_relearns_inverts_and_changes_and_is_left_as_it_was(family, tmp_path):
    """The three attacks' model-side steps on FLUX-dev's structure (tiny random weights: packed
    latents, distilled guidance, single-stream blocks); above, inversion runs on both shapes worlds
    (UNet and SD3's MMDiT), relearn and the changes on the UNet world. LoRA on the denoiser's attention trains and comes out again, inversion runs
    both ways in the family's latents, and every change is undone."""
    from erasectl.architecture import latent_shape

    folder = tiny_pipeline(tmp_path, family) if family == "sdxl" else tiny_transformer_pipeline(tmp_path, family)
    pipeline = load_pipeline(str(folder))
    before = weights_sha256(pipeline_modules(pipeline))
    latents = torch.randn(4, *latent_shape(pipeline), generator=torch.Generator().manual_seed(0))
    found, _ = relearn(pipeline, latents, [0, 1, 0, 1], ["a red circle", "a blue circle"],
                       AttackConfig(relearn_steps=(2,), batch_size=2), lambda: (0.0, []), None, 0.0, 1e-3)  # fmt: skip
    assert len(found["losses"]) == 2 and all(np.isfinite(found["losses"]))
    with torch.no_grad():
        conditioning = encode_prompts(pipeline, ["", ""])
        noise = ddim_invert(pipeline, latents[:2], conditioning, 4)
        back = ddim_draw(pipeline, noise, conditioning, 4)
    assert noise.shape == back.shape == latents[:2].shape and torch.isfinite(back).all()
    for change in ("bf16", "int8"):
        with changed(pipeline, change, {}, "square", None):
            assert weights_sha256(pipeline_modules(pipeline)) != before
    assert weights_sha256(pipeline_modules(pipeline)) == before
