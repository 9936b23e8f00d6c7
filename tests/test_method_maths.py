"""Each method's mathematics, pinned by small fast checks against formulas written out here."""

import pytest
import torch

from erasectl.methods.ablate import model_target, names_anchor, replace_anchor
from erasectl.methods.esd import guidance_target
from erasectl.methods.uce import UCEConfig, aligned_guide_position, closed_form


def test_esd_target_is_eq_4_and_points_away_from_the_concept():
    generator = torch.Generator().manual_seed(0)
    concept, unconditional = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    for eta in (0.5, 1.0, 2.0):
        target = guidance_target(concept, unconditional, eta)
        torch.testing.assert_close(target, unconditional - eta * (concept - unconditional))
        # the authors' scripts: eps(c) - ng (eps(c) - eps()) with ng = eta + 1
        torch.testing.assert_close(target, concept - (eta + 1) * (concept - unconditional), rtol=1e-5, atol=1e-5)
        assert float(((target - unconditional) * (concept - unconditional)).sum()) < 0


def test_esd_target_is_formed_in_float32_under_bf16():
    """Two nearby O(1) bf16 predictions: their difference formed in bf16 loses most of its bits."""
    base = torch.full((64,), 1.37)
    concept = (base + torch.linspace(0, 0.02, 64)).bfloat16()
    unconditional = base.bfloat16()
    target = guidance_target(concept, unconditional, 0.3)
    assert target.dtype == torch.float32
    exact = unconditional.float() - 0.3 * (concept.float() - unconditional.float())
    torch.testing.assert_close(target, exact)
    in_bf16 = unconditional - 0.3 * (concept - unconditional)
    signal = (exact - unconditional.float()).abs().max()
    assert (in_bf16.float() - exact).abs().max() > 0.05 * signal  # what the bf16 target would lose


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


def test_uce_closed_form_maps_concepts_to_targets_and_keeps_preserved_outputs():
    generator = torch.Generator().manual_seed(3)
    w0 = torch.randn(16, 32, generator=generator, dtype=torch.float64)
    erase = torch.randn(3, 32, generator=generator, dtype=torch.float64)
    targets = torch.randn(3, 16, generator=generator, dtype=torch.float64)
    preserve = torch.randn(5, 32, generator=generator, dtype=torch.float64)
    config = UCEConfig(erase_scale=1e6, preserve_scale=1e6, lamb=1e-3)
    edited = closed_form(w0, erase, targets, preserve, config)
    torch.testing.assert_close(erase @ edited.T, targets, rtol=0, atol=1e-4)
    torch.testing.assert_close(preserve @ edited.T, preserve @ w0.T, rtol=0, atol=1e-4)
    # lam alone: nothing to edit leaves W0
    torch.testing.assert_close(closed_form(w0, erase, erase @ w0.T, None, UCEConfig(lamb=0.5)), w0)


def test_uce_guide_positions_align_from_the_end():
    # concept "grumpy cat" at [3, 5) of "a photo of grumpy cat" (BOS at 0), end token at 5
    start, end, length = 3, 5, 77
    # a longer guide "garfield the cat" [3, 6): last meets last, the one before meets the one before
    assert [aligned_guide_position(p, start, end, 6, length) for p in (3, 4, 5, 6)] == [4, 5, 6, 7]
    # a shorter guide "cat" [3, 4): both concept tokens meet it; the end token meets the end token
    assert [aligned_guide_position(p, start, end, 4, length) for p in (3, 4, 5)] == [3, 3, 4]
    # the empty guide: the token before it (the start token of a bare prompt, as the authors' script)
    assert aligned_guide_position(1, 1, 2, 1, length) == 0
    assert aligned_guide_position(76, start, end, 6, length) == 76


def _independent_rule(group, name, module):
    """The reference rules, written out again: ESD's diffusers script keeps Linear/Conv2d modules
    (x: attn2; x-strict: attn2.to_k/to_v; all: every one; u: not attn2, and, as the CompVis
    noxattn rule, not the time embedding or the output head); ablation's create_custom_diffusion."""
    linear_or_conv = type(module).__name__ in ("Linear", "Conv2d")
    if group == "esd-x":
        return linear_or_conv and "attn2" in name
    if group == "esd-x-strict":
        return linear_or_conv and ("attn2.to_k" in name or "attn2.to_v" in name)
    if group == "esd-all":
        return linear_or_conv
    if group == "esd-u":
        return (
            linear_or_conv
            and "attn2" not in name
            and not any(name.startswith(p) for p in ("time_embedding", "add_embedding", "conv_out"))
        )
    if group == "kv":
        return "attn2.to_k" in name or "attn2.to_v" in name
    if group == "xattn":
        return "attn2" in name
    return True


@pytest.mark.parametrize("group", ["esd-x", "esd-x-strict", "esd-all", "esd-u", "kv", "xattn", "full"])
def test_parameter_groups_match_the_reference_rules(embedded_pipeline, group):
    from erasectl.parameter_groups import group_members

    unet = embedded_pipeline.unet
    expected = [
        f"{module_name}.{parameter_name}"
        for module_name, module in unet.named_modules()
        for parameter_name, _ in module.named_parameters(recurse=False)
        if _independent_rule(group, module_name, module)
    ]
    assert sorted(group_members(unet, group)) == sorted(expected)
    if group == "esd-u":
        members = group_members(unet, group)
        assert not any("norm" in name for name in members) and not any(
            n.startswith(("time_embedding", "conv_out")) for n in members
        )


def test_frozen_prediction_stays_the_base_unets_after_training(tmp_path):
    import copy

    from erasectl.architecture import encode_prompts
    from erasectl.methods.common import TrainedUNet
    from erasectl.models import load_pipeline
    from erasectl.parameter_groups import select_parameters

    pipeline = load_pipeline()
    base = copy.deepcopy(pipeline.unet)
    model = TrainedUNet(pipeline.unet, select_parameters(pipeline.unet, "kv", ("kv",)))
    with torch.no_grad():
        for parameter in model.trained.values():
            parameter.add_(0.1)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    timesteps = torch.tensor([100, 700])
    hidden = encode_prompts(pipeline, ["a red circle", "a blue ring"])
    with torch.no_grad():
        expected = base(latents, timesteps, encoder_hidden_states=hidden).sample
        moved = model(latents, timesteps, hidden)
    torch.testing.assert_close(model.frozen(latents, timesteps, hidden), expected, rtol=0, atol=0)
    assert not torch.allclose(moved, expected)
