"""RECE: Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024), UCE made robust.

After each UCE solve, RECE derives in closed form the embedding that makes the *edited* model
produce the concept's original cross-attention outputs again (an attack on the edit), and erases
it too, with the concept's guide, in the next solve; ``rounds`` times. Here every solve starts
from the original weights with the erased rows accumulated (the authors edit the edited model in
place each epoch); the adversarial map and its surrogate regulariser follow their
``close_form_emb`` (CharlesGong12/RECE). Chosen over AdvUnlearn's adversarial training because it
stays a closed form: seconds on a CPU, and it reuses UCE's preservation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from erasectl.errors import ConfigError
from erasectl.methods.uce import UCEConfig, run as uce_run

REFERENCE = "RECE (CharlesGong12/RECE, train_object.py) argparse defaults"


@dataclass
class RECEConfig(UCEConfig):
    rounds: int = field(default=1, metadata={"help": "Adversarial embeddings found and erased after the first solve.", "source": f"{REFERENCE}: --epochs 1 (objects)"})
    regular_scale: float = field(default=1e-3, metadata={"help": "Surrogate regulariser of the adversarial embedding.", "source": f"{REFERENCE}: --regular_scale 1e-3"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 1 or self.regular_scale < 0:
            raise ConfigError("rounds must be at least 1 and regular_scale 0 or more")


Config = RECEConfig
ACCEPTS_ANCHOR = True
NEEDS_ANCHOR = False


def run(pipeline, request, config: RECEConfig, progress=None, control=None):
    return uce_run(pipeline, request, config, progress, control)
