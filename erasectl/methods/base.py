"""The method contract: what every erasure method, built in or installed by another package, provides.

A method is a subclass of :class:`Method` with a config dataclass derived from :class:`MethodConfig`.
Each hyper-parameter is declared once, as a config field made with :func:`setting`: its type,
default (the paper's, which real models get), help text, and where the default comes from. The
``erase`` command's options, ``erasectl defaults``, the recipe stored in every checkpoint and
``docs/settings.md`` are all derived from these declarations.

Methods are registered by name in ``erasectl.methods`` (built-ins) or through the entry-point group
``erasectl.methods`` (other packages); ``docs/adding-a-method.md`` walks through one.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from erasectl.errors import ConfigError

if TYPE_CHECKING:  # annotations only
    import torch

Progress = Callable[[int, int, dict], None]
"""``progress(done, total, logs)``: called after each step; ``logs["loss"]`` is the step's loss."""

LOSSES = ("l2", "l1")
FAMILIES = ("sd1", "sd2", "sdxl")
ALL_FAMILIES = (*FAMILIES, "sd3", "flux")  # with the diffusion transformers (erasectl.families)
# What a method keeps by default when --preserve is not given, in the order it lists them:
#   words       each word of a multi-word concept alone ("blue square" keeps "blue" and "square")
#   attributes  the model profile's attribute captions (the embedded world's; none on real models)
#   retain-set  the model profile's retain set (AdvUnlearn's unrelated objects)
PRESERVATION_SOURCES = ("words", "attributes", "retain-set")
# What --concept-type takes: the kinds of concept the papers publish settings for.
CONCEPT_TYPES = ("object", "style", "nudity", "violence", "person")


def setting(default: Any, help: str, source: str = "erasectl", flag: str | None = None) -> Any:
    """One hyper-parameter's declaration, as a dataclass field: ``default`` (the paper's, which real
    models get), ``help`` (the option's help text), ``source`` (where the default comes from, which
    ``erasectl defaults`` prints) and, for a boolean, ``flag`` (the option pair, e.g.
    ``"--filter-anchor-images/--keep-all-anchor-images"``)."""
    metadata = {"help": help, "source": source}
    if flag is not None:
        metadata["flag"] = flag
    return field(default=default, metadata=metadata)


@dataclass
class MethodConfig:
    """Fields every method has; a method's config subclasses it, redeclaring a field to change its
    default, help or source. ``__post_init__`` raises ``ConfigError`` for a value out of range."""

    steps: int = setting(200, "Training iterations.")
    lr: float = setting(1e-4, "Adam learning rate.")
    loss: str = setting(
        "l2", "Distance between prediction and target: l2 or l1.", "every paper's loss: mean squared error"
    )
    seed: int = setting(0, "Seeds noise, timesteps and every random draw.")
    parameter_group: str = setting("", "Which parameters are trained.")

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ConfigError(f"steps must be at least 1, got {self.steps}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def declarations(cls) -> dict[str, Declaration]:
        """Every field's declaration, by field name."""
        import typing

        hints = typing.get_type_hints(cls)
        found = {}
        for f in fields(cls):
            if f.default is MISSING or "help" not in f.metadata:
                raise TypeError(
                    f"{cls.__name__}.{f.name} must be declared with erasectl.methods.base.setting(default, help)"
                )
            found[f.name] = Declaration(
                f.name, hints[f.name], f.default, f.metadata["help"], f.metadata["source"], f.metadata.get("flag")
            )
        return found


@dataclass
class TrainedConfig(MethodConfig):
    """Fields of the methods that train by gradient steps (ESD, ablation, AdvUnlearn)."""

    lora_rank: int = setting(
        0,
        "Train rank-R LoRA adapters (peft) on the parameter group's Linear layers instead of its weights; the checkpoint stores the adapters (0: train the weights).",
        "not in the SD papers; EraseAnything trains FLUX.1-dev as a rank-8 LoRA (train_flux_lora.py --rank)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank must be 0 (train the weights) or more, got {self.lora_rank}")


@dataclass(frozen=True)
class Declaration:
    """One setting as declared: what the CLI option, ``defaults`` and the docs are made from."""

    name: str
    type: type
    default: Any
    help: str
    source: str
    flag: str | None = None

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}"


@dataclass
class ErasureResult:
    """What ``Method.run`` returns: the erased tensors and the base tensors they replace, both under
    checkpoint keys (``unet.<name>``, ``text_encoder.<name>``), the loss per step, the wall time,
    and anything worth recording in the recipe (``extra``)."""

    erased: dict[str, torch.Tensor]
    base: dict[str, torch.Tensor]
    losses: list[float]
    wall_time_s: float
    extra: dict = field(default_factory=dict)


class Method(ABC):
    """An erasure method. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    """What ``--method`` takes."""
    summary: ClassVar[str]
    """One line for ``erase --help``: the method and its paper."""
    config_class: ClassVar[type[MethodConfig]]
    needs_anchor: ClassVar[bool] = False
    """The method maps the concept onto ``--anchor``, which must then be given."""
    accepts_anchor: ClassVar[bool] = False
    """``--anchor`` may be given (a guide, for the closed forms)."""
    families: ClassVar[tuple[str, ...]] = FAMILIES
    """The model families (``erasectl.architecture.family``) the method is right for."""
    default_preservation: ClassVar[tuple[str, ...]] = ("words",)
    """What is preserved without ``--preserve`` (see ``PRESERVATION_SOURCES``)."""
    concept_types: ClassVar[dict[str, dict[str, tuple[Any, str]]]] = {}
    """What the method's authors publish for a kind of concept (``--concept-type``, one of
    ``CONCEPT_TYPES``): settings by name and ``anchor`` (the guide or anchor concept when
    ``--anchor`` is not given), each ``(value, where it is published)``."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        unknown = [s for s in getattr(cls, "default_preservation", ()) if s not in PRESERVATION_SOURCES]
        if unknown:
            raise TypeError(
                f"{cls.__name__}.default_preservation: {unknown[0]!r} is not one of {', '.join(PRESERVATION_SOURCES)}"
            )
        types = [t for t in getattr(cls, "concept_types", {}) if t not in CONCEPT_TYPES]
        if types:
            raise TypeError(f"{cls.__name__}.concept_types: {types[0]!r} is not one of {', '.join(CONCEPT_TYPES)}")

    def mode_defaults(self, mode: str | None) -> dict[str, Any]:
        """Defaults that follow from a chosen ``--mode`` (none unless the method has modes)."""
        return {}

    @abstractmethod
    def run(
        self, pipeline, request, config: MethodConfig, progress: Progress | None = None, control=None
    ) -> ErasureResult:
        """Erase ``request.concepts`` from ``pipeline`` in place and return the changed tensors.

        - ``pipeline``: a loaded diffusers pipeline of one of ``families``.
        - ``request``: an ``erasectl.erasure.ErasureRequest``: the concepts, the anchor, the
          resolved preservation list (``request.preserve``) and the model profile's prompts
          (``request.templates(concept, kind)``).
        - ``config``: an instance of ``config_class``, validated.
        - ``progress``: see :data:`Progress`.
        - ``control``: an ``erasectl.run_state.RunControl`` (saving and resuming states, stopping on
          Ctrl-C), or None; a method that trains in steps hands it to a ``StepHook``; a closed form
          has nothing to resume and may ignore it.
        """


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)
