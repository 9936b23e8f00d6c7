"""What esd_sd.py's bf16 weights do to its updates, at SD 1.5's scale: Adam on ESD-x's parameters
(every cross-attention projection of an SD 1.5-shaped UNet, randomly initialised as diffusers
initialises it) for the script's 200 steps at its lr 5e-5, the same gradients fed to a bf16 copy
(weights and Adam state in bf16, as the script trains) and an fp32 copy.

    python benchmarks/esd_precision.py [--steps 200] [--lr 5e-5] [--json FILE]

The gradients are random (a new standard-normal draw each step, the same for both copies): Adam's
step is about lr whatever the gradient's scale, so whether a bf16 weight moves depends on its size,
not on the loss. Prints, for each copy, the share of weights that never moved, the share of weights
at least 2^-6 in size (whose bf16 spacing rounds a 5e-5 step away), and the bf16 update's norm
against the fp32 one's. The embedded world's figures come from benchmarks/erase_world.py
(docs/reference-code.md names both).
"""

from __future__ import annotations

import argparse
import json
import platform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import diffusers
    import torch
    from diffusers import UNet2DConditionModel

    import erasectl
    from erasectl.methods.esd import UNET_GROUPS
    from erasectl.parameter_groups import select_parameters

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768)  # diffusers' defaults are SD 1.x's shapes
    chosen = select_parameters(unet, "esd-x", UNET_GROUPS)
    start = torch.cat([p.detach().flatten() for p in chosen.values()])
    del unet
    copies = {"fp32": start.clone().requires_grad_(True), "bf16": start.to(torch.bfloat16).requires_grad_(True)}
    optimisers = {name: torch.optim.Adam([tensor], lr=args.lr) for name, tensor in copies.items()}
    generator = torch.Generator().manual_seed(1)
    for _ in range(args.steps):
        gradient = torch.randn(start.shape, generator=generator)
        for name, tensor in copies.items():
            tensor.grad = gradient.to(tensor.dtype)
            optimisers[name].step()
    moved = {name: tensor.detach().float() - start.to(tensor.dtype).float() for name, tensor in copies.items()}
    result = {
        "versions": {
            "erasectl": erasectl.__version__,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
        },
        "parameters": int(start.numel()),
        "steps": args.steps,
        "lr": args.lr,
        "share_at_least_2^-6": round(float((start.abs() >= 2**-6).float().mean()), 4),
        "never_moved": {name: round(float((delta == 0).float().mean()), 4) for name, delta in moved.items()},
        "bf16_update_norm_over_fp32": round(float(moved["bf16"].norm() / moved["fp32"].norm()), 4),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
