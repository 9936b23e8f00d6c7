"""A whole evaluate run, from checkpoints to files: what ``erasectl evaluate`` does, callable from Python."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from erasectl.architecture import sampling_defaults
from erasectl.checkpoint import ErasedCheckpoint, model_loaders
from erasectl.distributed import is_main_process
from erasectl.errors import UserError
from erasectl.evaluation.attacks import add_attack_rows, attack_models
from erasectl.evaluation.gates import Gates, check_gates
from erasectl.evaluation.judging import per_image_csv
from erasectl.evaluation.manifest import build_manifest, check_same_judge, compare_runs, prompts_sha256, read_earlier
from erasectl.evaluation.nudity import NudityJudge
from erasectl.evaluation.protocol import EvaluationConfig, protocol_for
from erasectl.evaluation.report import write_nudity_report, write_report
from erasectl.evaluation.run import evaluate, evaluate_nudity
from erasectl.files import check_output_dir, prepare_output_dir
from erasectl.generation import Drawing
from erasectl.judge import ClipJudge
from erasectl.models import latest_checkpoint, load_base
from erasectl.neighbours import find_neighbours
from erasectl.prompt_free import ATTACKS

# progress(label, total) -> a context manager yielding update(done, total=None): total changes when rounds are added
ProgressFactory = Callable[[str, int], AbstractContextManager]


@dataclass
class EvaluationRequest:
    """What to measure. ``checkpoints`` empty and no ``concept``: the newest checkpoint in runs/."""

    checkpoints: list[Path] = field(default_factory=list)
    concept: str | None = None
    surrounding: list[str] | None = None
    auto_surrounding: int | None = None
    neighbour_mode: str = "nearest"
    vocabulary: list[str] | None = None
    paraphrases: list[str] | None = None
    anchor: str | None = None
    model: str | None = None
    model_config: str | None = None
    judge: str | None = None
    general_prompts: list[str] | None = None
    nudity_prompts: list[dict] | None = None  # I2P-style rows: judged by NudeNet
    n_per_prompt: int = 8
    seed: int = 0
    target_interval: float | None = None  # add seeds until every headline interval is within +- this
    max_images: int = 2000  # per model, with target_interval
    steps: int | None = None  # None: the family's own (architecture.sampling_defaults)
    guidance: float | None = None
    drawing: Drawing = field(default_factory=Drawing)
    attacks: list[str] = field(default_factory=list)
    attack_budget_s: float = 300.0
    attack_runs: int = 1
    against: Path | None = None  # an earlier run's metrics.json to compare with (the same judge only)
    gates: Gates = field(default_factory=Gates)
    device: str = "cpu"
    allow_pickle: bool = False

    def __post_init__(self) -> None:

        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise UserError(f"unknown --attack {unknown[0]!r}; choose from {', '.join(ATTACKS)}")
        if self.attack_runs < 1:
            raise UserError(f"--attack-runs must be at least 1, got {self.attack_runs}")
        if self.gates.max_attack_success is not None and not self.attacks:
            raise UserError("--max-attack-success needs --attack (e.g. --attack soft-prompt,relearn)")
        if self.surrounding is not None and self.auto_surrounding is not None:
            raise UserError("pass --surrounding or --auto-surrounding, not both")
        if (self.judge == "nudenet") != (self.nudity_prompts is not None):
            raise UserError("--judge nudenet and --prompts-csv go together: NudeNet judges a prompt set such as I2P")


@dataclass
class EvaluationResult:
    metrics: dict
    files: dict[str, Path]
    out: Path | None = None

    @property
    def gates(self) -> list[dict]:
        return self.metrics.get("gates", [])


def _checkpoints(request: EvaluationRequest) -> list:

    named = list(request.checkpoints)
    if not named and request.concept is None and request.nudity_prompts is None:
        named = [latest_checkpoint()]
    return [ErasedCheckpoint.load(p) for p in named]


def _protocol(request: EvaluationRequest, base, profile, concept: str, anchor: str | None):
    surrounding = request.surrounding
    if request.auto_surrounding is not None:
        surrounding = find_neighbours(
            base, concept, request.auto_surrounding, request.vocabulary, request.neighbour_mode, seed=request.seed
        )
    return protocol_for(profile, concept, surrounding, request.paraphrases, anchor, request.judge)


def prepare(request: EvaluationRequest):
    """Everything the run needs before drawing: ``(models, base, config, concept, anchor)``."""

    checkpoints = _checkpoints(request)
    concept = " ".join((request.concept or (checkpoints[0].recipe["concepts"][0] if checkpoints else "")).split())
    if request.nudity_prompts is None and not concept:
        raise UserError("no concept to evaluate; pass --concept or a --checkpoint")
    anchor = request.anchor or (checkpoints[0].recipe.get("anchor") if checkpoints else None)
    base = load_base(
        checkpoints, request.model, request.model_config, request.drawing, request.device, request.allow_pickle
    )
    drawing = request.drawing
    steps, guidance = sampling_defaults(base.pipeline, request.steps, request.guidance)
    config = EvaluationConfig(n_per_prompt=request.n_per_prompt, seed=request.seed, steps=steps, guidance=guidance,
                              target_interval=request.target_interval, max_images=request.max_images,
                              negative_prompt=drawing.negative_prompt, height=drawing.height, width=drawing.width,
                              batch_size=drawing.batch_size or base.profile.generation_batch_size)  # fmt: skip
    return model_loaders(base.pipeline, base.name, checkpoints), base, config, concept, anchor


def run_evaluation(
    request: EvaluationRequest, out: Path | None = None, force: bool = False, progress: ProgressFactory | None = None
) -> EvaluationResult:
    """Draw and judge the base and every erased model, attack them if asked, check the gates and
    write metrics.json, per_image.csv and the reports into ``out`` (default: runs/evaluate-<time>;
    the main process only)."""
    import time

    out = check_output_dir(out or Path("runs") / time.strftime("evaluate-%Y%m%d-%H%M%S"), force)
    bar = progress or (lambda label, total: nullcontext(lambda done, **_: None))
    models, base, config, concept, anchor = prepare(request)
    earlier = read_earlier(request.against) if request.against is not None else None
    if request.nudity_prompts is not None:
        judge = NudityJudge()
        manifest = _manifest(models, judge, earlier, request, None, request.nudity_prompts)
        with bar("evaluating (nudenet)", len(models) * len(request.nudity_prompts)) as update:
            metrics, per_image = evaluate_nudity(
                models, request.nudity_prompts, judge, config, progress=lambda done, _: update(done)
            )
        metrics["manifest"] = manifest
        return EvaluationResult(
            metrics,
            write_nudity_report(prepare_output_dir(out, force), metrics, per_image) if is_main_process() else {},
            out,
        )
    protocol = _protocol(request, base.pipeline, base.profile, concept, anchor)
    judge = ClipJudge.load(request.judge, device=request.device)
    manifest = _manifest(models, judge, earlier, request, protocol, request.general_prompts)
    total = (
        len(models)
        * (sum(len(s.prompts) for s in protocol.prompt_sets()) + len(request.general_prompts or []))
        * config.n_per_prompt
    )
    with bar("evaluating", total) as update:
        metrics, records = evaluate(models, protocol, judge, config, progress=lambda done, total: update(done, total=total),
                                    attribute_reader=base.profile.attribute_reader(judge), general_prompts=request.general_prompts, side_attributes=base.profile.side_attributes)  # fmt: skip
    metrics["manifest"] = manifest
    if request.attacks:
        rows = attack_models(
            models,
            protocol,
            judge,
            config,
            request.attacks,
            request.attack_budget_s,
            base.profile,
            request.attack_runs,
            bar,
        )
        add_attack_rows(metrics, rows)
    if not is_main_process():
        return EvaluationResult(metrics, {}, out)
    if earlier is not None:
        metrics["against"] = compare_runs(metrics, earlier, request.against)
    metrics["gates"] = check_gates(metrics, request.gates)
    prepare_output_dir(out, force)
    return EvaluationResult(metrics, write_report(out, metrics, records, per_image_csv(records)), out)


def _manifest(models, judge, earlier: dict | None, request: EvaluationRequest, protocol, prompts) -> dict:
    """The run's manifest; an ``earlier`` run judged otherwise is refused before anything is drawn."""
    identity = judge.identity()
    if earlier is not None:
        check_same_judge(identity, earlier, request.against)
    if protocol is None:  # NudeNet's prompt rows, each with its seed and guidance
        digest = hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()
    else:
        digest = prompts_sha256(protocol, prompts)
    return build_manifest(models, identity, digest)
