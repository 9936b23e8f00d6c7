"""Erasures trained as LoRA (``--lora-rank``) on every family: the adapters' gradient is full
training's restricted to their span, the checkpoint stores the factors, and the LoRA exports
reload in diffusers exactly, with no truncation."""

import json

import pytest
import torch
from tiny_models import tiny_pipeline, tiny_transformer_pipeline
from typer.testing import CliRunner

from erasectl.architecture import denoiser, encode_prompts, latent_shape, predict_noise
from erasectl.checkpoint import ErasedCheckpoint
from erasectl.cli import app
from erasectl.methods.common import ADAPTER, remove_adapters, trained_model
from erasectl.models import load_pipeline
from erasectl.parameter_groups import lora_targets

runner = CliRunner()
FAMILIES = ["sd1", "sdxl", "sd3", "flux-dev"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_folder(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    if request.param in ("sd1", "sd2", "sdxl"):
        return request.param, tiny_pipeline(root, request.param)
    return request.param, tiny_transformer_pipeline(root, request.param)


def _loss(pipeline, model):
    """A fixed denoising loss of ``model`` (the trained denoiser's call), the same for every parametrisation."""
    generator = torch.Generator().manual_seed(0)
    channels, size, _ = latent_shape(
        pipeline, 32 if denoiser(pipeline).__class__.__name__ != "UNet2DConditionModel" else 0
    )
    latents = torch.randn(2, channels, size, size, generator=generator)
    target = torch.randn(latents.shape, generator=generator)
    conditioning = encode_prompts(pipeline, ["a red circle", "a blue square"])
    timesteps = torch.tensor([300.0, 700.0])
    return torch.nn.functional.mse_loss(model(latents, timesteps, conditioning), target)


def test_a_lora_s_gradient_is_full_training_s_restricted_to_its_span(family_folder):
    """At the adapters' start (up = 0), dL/d(up) = s G down^T and dL/d(down) = 0, where G is the
    gradient full training gets for the same weight: the LoRA step moves W within the span the
    adapter can reach, along full training's gradient."""
    family, folder = family_folder
    pipeline = load_pipeline(str(folder))
    module = denoiser(pipeline)
    full = trained_model(pipeline, "kv", ("kv",))
    _loss(pipeline, full).backward()
    gradients = {name: p.grad.detach().clone() for name, p in full.trained.items() if name.endswith(".weight")}
    module.zero_grad(set_to_none=True)
    targets = lora_targets(module, "kv", ("kv",))
    lora = trained_model(pipeline, "kv", ("kv",), lora_rank=2)
    try:
        _loss(pipeline, lora).backward()
        assert lora.targets == targets and targets
        for name in lora.targets:
            layer = module.get_submodule(name)
            down, up = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            scale = layer.scaling[ADAPTER]
            assert torch.count_nonzero(up) == 0
            expected = scale * gradients[f"{name}.weight"] @ down.detach().T
            assert torch.allclose(up.grad, expected, rtol=1e-4, atol=1e-7)
            assert down.grad is None or torch.count_nonzero(down.grad) == 0
    finally:
        remove_adapters(module)
    assert not any(ADAPTER in n for n, _ in module.named_parameters())


METHOD_ARGS = {
    "esd": ["--method", "esd", "--mode", "fast", "--steps", "3", "--ddim-steps", "3", "--batch-size", "2",
            "--sample-size", "32", "--lr", "1e-2"],
    "ablate": ["--method", "ablate", "--anchor", "shape", "--steps", "3", "--anchor-images", "2", "--anchor-steps", "2",
               "--anchor-size", "32", "--batch-size", "2", "--lr", "1e-2"],
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_a_lora_erasure_stores_its_factors_and_exports_them_exactly(family_folder, method, tmp_path):
    family, folder = family_folder
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["erase", "--concept", "red circle", *METHOD_ARGS[method], "--lora-rank", "3", "--model", str(folder),
              "--out", str(run), "--quiet", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    checkpoint = ErasedCheckpoint.load(run)
    factors = checkpoint.lora_factors()
    assert factors and all(down.shape[0] == 3 and up.shape[1] == 3 for down, up in factors.values())
    assert not [k for k in checkpoint.tensors if not k.endswith(("lora_down.weight", "lora_up.weight"))]
    assert any(torch.count_nonzero(up) for _, up in factors.values())  # it trained
    erased = load_pipeline(str(folder))
    checkpoint.apply(erased)
    # each LoRA export, read by diffusers' own loader and fused, is the checkpoint applied (FLUX's
    # kohya file fuses q, k and v as Black Forest Labs' modules do; SD3's, read by ComfyUI's rule)
    for kind in ("lora", "kohya"):
        out = tmp_path / kind
        exported = runner.invoke(app, ["export", str(run), "--format", kind, "--out", str(out), "--quiet", "--json",
                                       "--no-verify"])  # fmt: skip
        assert exported.exit_code == 0, exported.output
        summary = json.loads(exported.output)
        assert summary["ranks"] == [3] and summary["min_kept_energy"] == 1.0
        if kind == "kohya" and family == "sd3":
            comfyui_reads_the_sd3_kohya_file_as_the_single_file_export(run, folder, summary["file"], tmp_path)
            continue
        reloaded = load_pipeline(str(folder))
        reloaded.load_lora_weights(summary["file"], adapter_name="erasure")
        reloaded.fuse_lora()
        reloaded.unload_lora_weights()
        for key in factors:
            component, _, name = key.partition(".")
            ours = getattr(erased, component).get_parameter(name)
            theirs = getattr(reloaded, component).get_parameter(name)
            assert torch.allclose(ours, theirs, atol=1e-6), (kind, key)
    refused = runner.invoke(app, ["export", str(run), "--format", "lora", "--rank", "2", "--out", str(tmp_path / "r")])
    assert refused.exit_code == 2 and "drop --rank" in refused.output


def comfyui_reads_the_sd3_kohya_file_as_the_single_file_export(run, folder, kohya_file, tmp_path):
    """diffusers has no reader for SD3 kohya names; ComfyUI maps ``lora_unet_<key, "." as "_">`` onto
    its ``diffusion_model.<key>`` tensors (Stability AI's names) and adds alpha / rank x up @ down.
    Applied to the base in that layout, that must give the erased model's single-file export."""
    from safetensors.torch import load_file

    from erasectl.families.sd3 import FAMILY

    out = tmp_path / "single"
    exported = runner.invoke(app, ["export", str(run), "--format", "single-file", "--out", str(out), "--quiet",
                                   "--no-verify"])  # fmt: skip
    assert exported.exit_code == 0, exported.output
    erased = load_file(next(out.glob("*.safetensors")))
    base = FAMILY.original_layout(load_pipeline(str(folder)).transformer)
    lora = load_file(kohya_file)
    assert erased.keys() == base.keys()
    applied = 0
    for key, tensor in base.items():
        stem = "lora_unet_" + key.removesuffix(".weight").replace(".", "_")
        if key.endswith(".weight") and f"{stem}.lora_down.weight" in lora:
            down, up = lora[f"{stem}.lora_down.weight"], lora[f"{stem}.lora_up.weight"]
            tensor = tensor + float(lora[f"{stem}.alpha"]) / down.shape[0] * up @ down
            applied += 1
        assert torch.allclose(erased[key], tensor, atol=1e-6), key
    assert applied == len({k for k in lora if k.endswith(".lora_down.weight")}) > 0


def test_lora_refuses_what_it_cannot_train(tmp_path):
    folder = tiny_transformer_pipeline(tmp_path, "sd3")
    base = ["erase", "--concept", "circle", "--method", "esd", "--model", str(folder), "--lora-rank", "4"]
    faithful = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert faithful.exit_code == 2 and "--mode faithful-fp32 or fast" in faithful.output
    negative = runner.invoke(app, [*base[:-1], "-1", "--mode", "fast", "--out", str(tmp_path / "b")])
    assert negative.exit_code == 2 and "lora_rank must be 0" in negative.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_pipeline_after_a_lora_erasure_is_the_checkpoint_applied(tmp_path):
    from erasectl.erasure import ErasureRequest, erase_concepts, get_method
    from erasectl.profiles import PaperProfile

    folder = tiny_transformer_pipeline(tmp_path, "flux-schnell")
    pipeline = load_pipeline(str(folder))
    config = get_method("esd").config_class(
        steps=3, lr=1e-2, mode="fast", sample_size=32, ddim_steps=3, batch_size=2, lora_rank=2
    )
    checkpoint = erase_concepts(pipeline, "esd", ErasureRequest(["red circle"], PaperProfile()), config)
    fresh = load_pipeline(str(folder))
    checkpoint.check(fresh)
    checkpoint.apply(fresh)
    latents = torch.randn(1, *latent_shape(pipeline, 32), generator=torch.Generator().manual_seed(1))
    conditioning = encode_prompts(pipeline, ["red circle"])
    with torch.no_grad():
        ours = predict_noise(denoiser(pipeline), latents, torch.tensor([500.0]), conditioning)
        theirs = predict_noise(denoiser(fresh), latents, torch.tensor([500.0]), conditioning)
    assert torch.equal(ours, theirs)
    assert not any(ADAPTER in n for n, _ in denoiser(pipeline).named_parameters())
