"""SD3 and FLUX (diffusion transformers, flow matching): tiny pipelines built offline load, draw,
are erased by every method from the CLI, evaluated, attacked and exported; what no reader loads
(T5's deltas as a LoRA) refuses in one line."""

import json

import pytest
import torch
from tiny_models import tiny_transformer_pipeline
from typer.testing import CliRunner

from erasectl.cli import app
from erasectl.world.tokenizer import t5_tokenizer

runner = CliRunner()


def uce_erasure(folder, run, concept: str = "circle"):
    """A quick erasure of ``concept`` (UCE) from the CLI; its run folder."""
    erased = runner.invoke(app, ["erase", "--concept", concept, "--method", "uce", "--model", str(folder),
                                 "--out", str(run), "--quiet"])  # fmt: skip
    assert erased.exit_code == 0, erased.output
    return run


@pytest.fixture(scope="module", params=["sd3", "sd3-no-t5", "flux-dev", "flux-schnell"])
def transformer_family(request, tmp_path_factory):
    return request.param, tiny_transformer_pipeline(tmp_path_factory.mktemp(request.param), request.param)


def test_a_t5_tokenizer_built_in_memory_ends_every_text_with_its_end_token():
    tokenizer = t5_tokenizer(["a", "red", "circle"])
    ids = tokenizer("a red circle").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["\u2581a", "\u2581red", "\u2581circle", "</s>"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("a redcircle").input_ids)[-1] == "</s>"


def test_generate_draws_from_a_transformer_family(transformer_family, tmp_path):
    family, folder = transformer_family
    out = tmp_path / "images"
    result = runner.invoke(
        app, ["generate", "--model", str(folder), "--prompts", "a red circle", "--n", "2", "--steps", "2",
              "--out", str(out), "--quiet", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["image_count"] == 2 and summary["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert len(list(out.glob("0*.png"))) == 2


METHOD_ARGS = {
    "esd": ["--mode", "fast", "--steps", "2", "--sample-size", "32", "--ddim-steps", "3", "--batch-size", "2"],
    "ablate": ["--anchor", "shape", "--steps", "2", "--anchor-images", "2", "--anchor-steps", "2", "--anchor-size", "32",
               "--batch-size", "2"],
    "uce": [], "nullspace": [], "rece": [],
    "advunlearn": ["--parameter-group", "esd-x", "--mode", "fast", "--steps", "2", "--warmup-steps", "1",
                   "--sample-size", "16", "--ddim-steps", "3", "--batch-size", "2"],
}  # fmt: skip


def test_generate_draws_with_the_family_s_own_steps_and_guidance(transformer_family, tmp_path):
    family, folder = transformer_family
    out = tmp_path / "images"
    result = runner.invoke(
        app, ["generate", "--model", str(folder), "--prompts", "a red circle", "--n", "1", "--height", "32",
              "--width", "32", "--out", str(out), "--quiet", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    expected = {"sd3": (28, 7.0), "sd3-no-t5": (28, 7.0), "flux-dev": (28, 3.5), "flux-schnell": (4, 0.0)}[family]
    assert (summary["steps"], summary["guidance"]) == expected


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_every_method_erases_a_transformer_family_from_the_cli_and_generate_applies_it(
    transformer_family, method, tmp_path
):
    family, folder = transformer_family
    out = tmp_path / "run"
    args = ["erase", "--concept", "red circle", "--method", method, "--model", str(folder), "--out", str(out)]
    result = runner.invoke(app, args + METHOD_ARGS[method] + ["--quiet", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["family"] == ("sd3" if family.startswith("sd3") else "flux")
    from erasectl.checkpoint import ErasedCheckpoint

    tensors = ErasedCheckpoint.load(out).tensors
    assert tensors and all(key.startswith("transformer.") for key in tensors)
    images = tmp_path / "images"
    drawn = runner.invoke(
        app, ["generate", "--checkpoint", str(out), "--prompts", "a red circle", "--n", "1", "--steps", "2",
              "--out", str(images), "--quiet", "--json"],
    )  # fmt: skip
    assert drawn.exit_code == 0, drawn.output
    assert len(list(images.glob("0*.png"))) == 1


def test_advunlearn_trains_the_text_encoders_t5_included(transformer_family, tmp_path):
    """AdvUnlearn's default group trains every text encoder's layers, T5's under its own names
    (SD3's text_encoder_3, FLUX's text_encoder_2); the checkpoint applies to a fresh pipeline; a
    LoRA export, which no reader loads for T5, refuses in one line."""
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.models import load_pipeline

    family, folder = transformer_family
    run = tmp_path / "run"
    args = ["erase", "--concept", "circle", "--method", "advunlearn", "--mode", "fast", "--steps", "2",
            "--warmup-steps", "1", "--sample-size", "16", "--ddim-steps", "3", "--batch-size", "2"]  # fmt: skip
    result = runner.invoke(app, [*args, "--model", str(folder), "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    checkpoint = ErasedCheckpoint.load(run)
    t5 = {"sd3": "text_encoder_3", "flux-dev": "text_encoder_2", "flux-schnell": "text_encoder_2"}.get(family)
    if t5 is not None:
        assert any(k.startswith(f"{t5}.encoder.block.") for k in checkpoint.tensors)
    assert any(k.startswith("text_encoder.text_model.encoder.layers.") for k in checkpoint.tensors)
    fresh = load_pipeline(str(folder))
    checkpoint.apply(fresh)
    for key, tensor in checkpoint.tensors.items():
        component, _, name = key.partition(".")
        name = name.removeprefix("text_model.") if not hasattr(getattr(fresh, component), "text_model") else name
        assert torch.equal(getattr(fresh, component).state_dict()[name], tensor), key
    if t5 is not None:
        lora = runner.invoke(app, ["export", str(run), "--format", "lora", "--out", str(tmp_path / "l"), "--quiet"])
        assert lora.exit_code == 2 and "no LoRA reader loads" in lora.output
        assert not (tmp_path / "l").exists()


def test_a_flux_erasure_exports_as_a_diffusers_folder_and_kohya_names(transformer_family, tmp_path):
    family, folder = transformer_family
    if family != "flux-dev":
        pytest.skip("one family is enough")
    run = uce_erasure(folder, tmp_path / "run", "red circle")
    # --no-verify: its check draws at FLUX's own 1024 px; the tensors are compared here, exactly
    exported = runner.invoke(
        app, ["export", str(run), "--format", "diffusers", "--out", str(tmp_path / "d"), "--quiet", "--no-verify"]
    )
    assert exported.exit_code == 0, exported.output
    from erasectl.checkpoint import ErasedCheckpoint
    from erasectl.models import load_pipeline

    reloaded = load_pipeline(str(tmp_path / "d"))
    for key, tensor in ErasedCheckpoint.load(run).tensors.items():
        assert torch.equal(reloaded.transformer.get_parameter(key.partition(".")[2]), tensor)
    kohya = runner.invoke(
        app, ["export", str(run), "--format", "kohya", "--out", str(tmp_path / "k"), "--quiet", "--json", "--no-verify"]
    )
    assert kohya.exit_code == 0, kohya.output
    from safetensors import safe_open

    with safe_open(json.loads(kohya.output)["file"], "pt") as handle:  # UCE's maps under their original names
        assert {k.split(".")[0] for k in handle.keys()} == {"lora_unet_txt_in", "lora_unet_vector_in_in_layer"}


def test_evaluate_measures_a_transformer_erasure_with_the_family_s_sampler(transformer_family, tmp_path):
    """evaluate draws base and erased models with the family's own steps and guidance."""
    from erasectl.assets import embedded_judge_dir

    family, folder = transformer_family
    if family not in ("sd3", "flux-schnell"):
        pytest.skip("one family of each kind is enough")
    run = uce_erasure(folder, tmp_path / "run", "circle")
    out = tmp_path / "evaluation"
    common = ["evaluate", "--checkpoint", str(run), "--surrounding", "ring,square", "--judge", str(embedded_judge_dir()),
              "--n-per-prompt", "1", "--height", "32", "--width", "32", "--quiet"]  # fmt: skip
    result = runner.invoke(app, [*common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"sd3": (28, 7.0), "flux-schnell": (4, 0.0)}[family]
    assert (metrics["config"]["steps"], metrics["config"]["guidance"]) == expected
    assert list(metrics["models"]) == ["base", "run"]
    assert all(sets["n"] > 0 for model in metrics["models"].values() for sets in model["sets"].values())


def test_an_sd3_erasure_exports_as_one_transformer_file_that_loads_and_erases_again(transformer_family, tmp_path):
    """The single file holds the transformer in Stability AI's MMDiT layout; the export's own check
    reloads it with diffusers' from_single_file (bit-identical, same images), and erasectl loads it
    again with --model FILE --model-config FOLDER."""
    family, folder = transformer_family
    if family != "sd3":
        pytest.skip("one family is enough; FLUX's layout is checked at its real width below")
    run = uce_erasure(folder, tmp_path / "run", "circle")
    out = tmp_path / "file"
    exported = runner.invoke(
        app, ["export", str(run), "--format", "single-file", "--out", str(out), "--quiet", "--json"]
    )
    assert exported.exit_code == 0, exported.output
    summary = json.loads(exported.output)
    assert summary["verification"]["max_pixel_difference"] == 0
    from safetensors import safe_open

    with safe_open(summary["file"], "pt") as handle:
        keys = set(handle.keys())
    assert "joint_blocks.0.x_block.attn.qkv.weight" in keys and "context_embedder.weight" in keys
    again = runner.invoke(app, ["erase", "--concept", "square", "--method", "uce", "--model", summary["file"],
                                "--model-config", str(folder), "--out", str(tmp_path / "again"), "--quiet"])  # fmt: skip
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("guidance_embeds", [True, False])
def test_flux_s_original_layout_is_what_diffusers_single_file_converter_reads(guidance_embeds):
    """FLUX's single-file layout (Black Forest Labs' names, q/k/v and the single blocks' MLP input
    fused, the final adaLN halves swapped) read back by diffusers' own converter gives every tensor
    exactly. That converter assumes FLUX's real width (3072), so the model here has it, with one
    block of each kind."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from erasectl.families import of

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=128, num_attention_heads=24,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds, axes_dims_rope=(16, 56, 56),
    )  # fmt: skip
    original = of(transformer).original_layout(transformer)
    assert "double_blocks.0.img_attn.qkv.weight" in original and "single_blocks.0.linear1.weight" in original
    back = convert_flux_transformer_checkpoint_to_diffusers(dict(original))
    state = transformer.state_dict()
    assert set(back) == set(state)
    for key, tensor in state.items():
        assert torch.equal(back[key], tensor), key


def test_sd35_s_original_layout_is_what_diffusers_single_file_converter_reads():
    """SD3.5's MMDiT (dual attention in the first blocks, RMS q/k norms) in Stability AI's layout,
    read back by diffusers' own converter, gives every tensor exactly (the last block's context
    adaLN halves swapped, as its final-layer form needs)."""
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    from erasectl.families import of

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=16, num_layers=3, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64, out_channels=16,
        pos_embed_max_size=16, dual_attention_layers=(0, 1), qk_norm="rms_norm",
    )  # fmt: skip
    original = of(transformer).original_layout(transformer)
    assert (
        "joint_blocks.0.x_block.attn2.qkv.weight" in original
        and "joint_blocks.2.context_block.attn.ln_q.weight" in original
    )
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    state = transformer.state_dict()
    assert set(back) == set(state)
    for key, tensor in state.items():
        assert torch.equal(back[key], tensor), key


def test_both_attacks_run_on_sd3_and_the_soft_prompt_learns_its_token_in_every_encoder(transformer_family, tmp_path):
    from erasectl.assets import embedded_judge_dir

    family, folder = transformer_family
    if family != "sd3":
        pytest.skip("one family is enough; FLUX's token is checked below")
    run = uce_erasure(folder, tmp_path / "run", "circle")
    out = tmp_path / "attack"
    attacked = runner.invoke(
        app, ["attack", "--checkpoint", str(run), "--steps", "3", "--images", "2", "--n-per-prompt", "1",
              "--judge", str(embedded_judge_dir()), "--surrounding", "ring", "--out", str(out), "--quiet", "--json"],
    )  # fmt: skip
    assert attacked.exit_code == 0, attacked.output
    summary = json.loads(attacked.output)
    assert len(summary["losses"]) == 3 and summary["images"] > 0
    from safetensors import safe_open

    with safe_open(str(out / "embedding.safetensors"), "pt") as handle:
        assert set(handle.keys()) == {"clip_l", "clip_g", "t5xxl"}
    searched = runner.invoke(
        app, ["attack", "--checkpoint", str(run), "--method", "prompt-search", "--images", "2", "--prefix-tokens", "1",
              "--candidates", "2", "--rounds", "1", "--n-per-prompt", "1", "--judge", str(embedded_judge_dir()),
              "--surrounding", "ring", "--out", str(tmp_path / "search"), "--quiet", "--json"],
    )  # fmt: skip
    assert searched.exit_code == 0, searched.output
    assert len(json.loads(searched.output)["prefix"].split()) == 1  # one word put before the prompt


def test_a_placeholder_token_reaches_flux_through_t5_and_clip(transformer_family):
    """The attacks' learned token, in FLUX's two encoders: its T5 vector moves the token rows and its
    CLIP vector the pooled vector, so the denoising loss has a gradient for both."""
    from erasectl.attacks import PLACEHOLDER, denoising_loss, placeholder_token
    from erasectl.models import load_pipeline

    family, folder = transformer_family
    if family != "flux-dev":
        pytest.skip("one family is enough")
    pipeline = load_pipeline(str(folder))
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with placeholder_token(pipeline, "shape") as vectors:
        assert set(vectors) == {"clip_l", "t5xxl"}
        loss = denoising_loss(pipeline, [f"a photo of a {PLACEHOLDER}"] * 2, latents, torch.tensor([300.0, 600.0]),
                              torch.zeros_like(latents))  # fmt: skip
        loss.backward()
        assert all(float(v.grad.abs().sum()) > 0 for v in vectors.values())
    assert PLACEHOLDER not in pipeline.tokenizer_2.get_vocab()
