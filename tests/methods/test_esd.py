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
