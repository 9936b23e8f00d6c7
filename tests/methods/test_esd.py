"""ESD: the target, written out (its faithful loop against the authors' script: tests/test_reference.py)."""

import torch

from erasectl.methods.esd import guidance_target


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


def test_the_authors_readme_group_names_are_aliases_of_the_groups_they_mean():
    from erasectl.methods.esd import ESDConfig

    for alias, group in (("xattn", "esd-x"), ("noxattn", "esd-u"), ("full", "esd-all"), ("esd-x", "esd-x")):
        assert ESDConfig(parameter_group=alias).parameter_group == group


def test_faithful_trains_bf16_weights_as_esd_sd_py_and_faithful_fp32_does_not(tmp_path):
    """--mode faithful is esd_sd.py as released: weights and Adam state in bf16, so a step smaller
    than half a weight's bf16 spacing is rounded away (every weight of at least 2^-4, whose half
    spacing 2^-12 is above any Adam step at lr 5e-5); x_t sampled at --sample-size. faithful-fp32 is
    the same loop in fp32. The caller's pipeline stays fp32 and ends with the trained tensors."""
    from tiny_models import tiny_pipeline

    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.methods.esd import ESDConfig, Shortcuts, _Training
    from erasectl.models import load_pipeline
    from erasectl.profiles import PaperProfile

    folder = tiny_pipeline(tmp_path / "sd1", "sd1", "PNDMScheduler")
    results = {}
    for mode in ("faithful", "faithful-fp32"):
        pipeline = load_pipeline(str(folder))
        base = {k: v.clone() for k, v in pipeline.unet.state_dict().items()}
        config = build_config("esd", PaperProfile(), {"mode": mode, "steps": 4, "ddim_steps": 4, "sample_size": 32})
        checkpoint = erase_concepts(pipeline, "esd", ErasureRequest(["circle"], PaperProfile()), config)
        assert next(pipeline.unet.parameters()).dtype == torch.float32
        for key, tensor in checkpoint.tensors.items():
            assert torch.equal(pipeline.unet.get_parameter(key[len("unet.") :]), tensor)
        erased = torch.cat([t.flatten() for t in checkpoint.tensors.values()])
        original = torch.cat([base[k[len("unet.") :]].flatten() for k in checkpoint.tensors])
        results[mode] = (erased, original)
    erased, original = results["faithful"]
    assert torch.equal(erased, erased.to(torch.bfloat16).float())  # bf16 values
    large = original.abs() >= 2**-4
    assert large.sum() > 100
    assert torch.equal(erased[large], original[large].to(torch.bfloat16).float())  # never moved
    erased32, original32 = results["faithful-fp32"]
    assert (erased32[large] != original32[large]).float().mean() > 0.9  # fp32 moves them
    assert not torch.equal(erased32, erased32.to(torch.bfloat16).float())

    defaults = build_config("esd", PaperProfile(), {})
    assert (defaults.mode, defaults.sample_size) == ("faithful", 1024)
    assert build_config("esd", PaperProfile(), {"mode": "faithful-fp32"}).sample_size == 0
    pipeline = load_pipeline(str(folder))
    shortcuts, generator = Shortcuts.for_mode("faithful"), torch.Generator().manual_seed(0)
    training = _Training(
        pipeline, pipeline.unet, ESDConfig(sample_size=32), ["circle"], None, None, shortcuts, generator, None
    )
    assert training.latent_shape[1:] == (32 // pipeline.vae_scale_factor,) * 2
    assert training.unet is not pipeline.unet and training.unet.dtype == torch.bfloat16


def test_faithful_mode_refuses_the_text_encoder_and_advunlearn_refuses_bf16():
    import pytest

    from erasectl.erasure import build_config
    from erasectl.errors import UserError
    from erasectl.profiles import PaperProfile

    with pytest.raises(UserError, match="faithful-fp32"):
        build_config("esd", PaperProfile(), {"parameter_group": "text-encoder"})
    assert build_config("esd", PaperProfile(), {"parameter_group": "text-encoder", "mode": "faithful-fp32"})
    assert build_config("advunlearn", PaperProfile(), {}).mode == "faithful-fp32"
    with pytest.raises(UserError, match="fp32"):
        build_config("advunlearn", PaperProfile(), {"mode": "faithful"})
