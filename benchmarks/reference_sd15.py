"""erasectl's faithful settings against transcriptions of the authors' computations, at SD 1.5's
scale: the checks of tests/test_reference.py (which run on tiny pipelines) on random weights in SD
1.5's shapes (an 860M-parameter UNet, a 12-layer CLIP ViT-L/14 text encoder).

    python benchmarks/reference_sd15.py [--json FILE]

Prints the largest relative difference (Frobenius norm, over every edited projection) of UCE's
script edit of a multi-word concept (uce_sd_erase.py), UCE's paper-era edit (train_erase.py),
RECE's two rounds (train_object.py), and the relative difference of AdvUnlearn's retain term
(get_train_loss_retain). The goal is 1e-5 or less for each.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from esd_speed import sd15_pipeline  # noqa: E402
from test_reference import rece_difference, retain_terms, uce_paper_difference, uce_phrase_difference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import diffusers
    import torch

    import erasectl

    checks = {
        "uce script, a multi-word concept (uce_sd_erase.py)": lambda p: uce_phrase_difference(p)[0],
        "uce --variant paper (train_erase.py)": uce_paper_difference,
        "rece, two rounds (train_object.py)": rece_difference,
        "advunlearn retain term (get_train_loss_retain)": lambda p: float(
            (lambda ours, reference: abs(ours - reference) / abs(reference))(*retain_terms(p))
        ),
    }
    found = {}
    for name, check in checks.items():
        started = time.perf_counter()
        pipeline = sd15_pipeline(8)  # 64 px x_t for the retain term's sampling; the weights are SD 1.5's shapes
        difference = float(check(pipeline))
        found[name] = {"relative_difference": difference, "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name}: {difference:.2e} ({found[name]['seconds']} s)", flush=True)
    result = {
        "versions": {
            "erasectl": erasectl.__version__,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
        },
        "model": "random weights in SD 1.5's shapes (benchmarks/esd_speed.py sd15_pipeline)",
        "goal": 1e-5,
        "checks": found,
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
