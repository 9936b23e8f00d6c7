"""Each method's mathematics, pinned by small fast checks against formulas written out here."""

import pytest


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
