"""What the built-in methods share: the trained UNet beside its frozen original."""

import torch


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
