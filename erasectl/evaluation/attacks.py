"""The text attacks inside evaluate: each attack on each erased model, with evaluate's judge,
protocol and seeds, repeated from images and noise of its own."""

from __future__ import annotations

from contextlib import nullcontext

from erasectl.attacks import ATTACK_ROW, AttackConfig, pool_runs
from erasectl.prompt_free import attack


def attack_models(
    models, protocol, judge, config, attacks: list[str], budget_s: float, profile, runs: int = 1, progress=None
) -> list[dict]:
    """One row per erased model and attack: the mean of ``runs`` runs, each from images and noise of
    its own (seed + 1000 x run; one run's success moves with its seeds), judged on the same seeds.
    ``progress(label, total)``: a context manager yielding ``update(done)``, or None."""
    rows = []
    base_load = models[0][1]
    for name, load, info in models[1:]:
        judged: dict = {}  # the base's and the plain prompts' images, the same for every attack and run
        for kind in attacks:
            summaries = []
            for run in range(runs):
                attack_config = AttackConfig(seed=config.seed + 1000 * run, budget_s=budget_s)
                label = f"attacking {name} ({kind})" + (f", run {run + 1} of {runs}" if runs > 1 else "")
                bar = (
                    progress(label, attack_config.progress_total(kind))
                    if progress
                    else nullcontext(lambda done, **_: None)
                )
                with bar as update:
                    summary, _ = attack(
                        base_load, load, protocol.concept, protocol, judge, kind, attack_config, config.seeds, config.sampler(), profile,
                        progress=lambda done, _, logs, update=update: update(done), judged=judged, recipe=info.get("recipe"),
                    )  # fmt: skip
                summaries.append(summary)
            row = {"model": name, **{k: v for k, v in pool_runs(summaries).items() if k in ATTACK_ROW}}
            rows.append({**row, "note": attack_note(row)})
    return rows


def attack_note(row: dict) -> str | None:
    """What an attack that skips the prompt found, in one line for the report."""
    details = row.get("details") or {}
    if row["attack"] == "relearn":
        curve = " / ".join(f"{p['steps']}: {p['success']:.2f}" for p in details["curve"])
        half = details["steps_to_half"]
        return f"after steps {curve}; " + (f"over 50% after {half}" if half is not None else "never over 50%")
    if row["attack"] == "compose":
        second = details.get("second_concept")
        return ", ".join(
            f"{c['change']}{f' ({second})' if c['change'] == 'erase' else ''} {c['success']:.2f}"
            for c in details["changes"]
        )
    if row["attack"] == "inversion":
        return f"{details['inversion_steps']} steps each way under the empty prompt"
    return None


def add_attack_rows(metrics: dict, rows: list[dict]) -> None:
    """The attack table, and each erased model's successes beside its headline row."""
    metrics["tables"]["attacks"] = rows
    for row in metrics["tables"]["erased_vs_surrounding"]:
        found = {r["attack"]: r["attack_success"] for r in rows if r["model"] == row["model"]}
        if found:
            row["attack_success"] = found
