from __future__ import annotations

import json
from pathlib import Path

import typer

from erasectl.cli.common import user_errors
from erasectl.cli.options import MODEL_CONFIG

# fmt: off
METHOD = typer.Option(None, "--method", help="One method (esd, ablate, uce, ...); default: every registered method, plugins included.")
MODEL = typer.Option(None, "--model", help="The model whose defaults to print (a folder, a hub id or a single file); default: the embedded shapes model. Nothing is loaded but its marker.")
MODE = typer.Option(None, "--mode", help="esd, advunlearn: the defaults under this --mode.")
CONCEPT_TYPE = typer.Option(None, "--concept-type", help="object, style, nudity, violence or person: the defaults under erase's --concept-type (the guide or anchor shows as --anchor).")
AS_JSON = typer.Option(False, "--json", help="Print the defaults as JSON on stdout.")
AS_MARKDOWN = typer.Option(False, "--markdown", help="Print every method's settings for real models and the embedded world as Markdown (docs/settings.md).")
# fmt: on


@user_errors
def defaults(
    method: str = METHOD,
    model: str = MODEL,
    mode: str = MODE,
    concept_type: str = CONCEPT_TYPE,
    model_config: Path = MODEL_CONFIG,
    as_json: bool = AS_JSON,
    as_markdown: bool = AS_MARKDOWN,
) -> None:
    """Print every method's hyper-parameter defaults for a model, and where each comes from.

    Real models get each paper's (or its authors' script's) settings; the embedded shapes world
    gets its own, measured on it. Which set applies is read from the model folder, not its name.
    """
    from erasectl.erasure import concept_type_defaults, resolve_defaults
    from erasectl.methods import get_method, method_names
    from erasectl.models import model_profile, resolve_model

    names = [method] if method else method_names()
    for name in names:
        get_method(name)  # an unknown method is a one-line error
    if as_markdown:
        typer.echo(settings_markdown(names), nl=False)
        return
    model_name, _ = resolve_model(model)
    profile = model_profile(model, model_config)
    given = {"mode": mode} if mode else {}
    table = {name: resolve_defaults(name, profile, given if "mode" in get_method(name).config_class.declarations() else {}, concept_type) for name in names}  # fmt: skip
    for name in names:
        anchor = concept_type_defaults(name, concept_type).get("anchor")
        if anchor is not None:
            table[name]["anchor"] = (anchor[0], f"--concept-type {concept_type}: {anchor[1]}")
    if as_json:
        found = {m: {k: {"value": v, "source": s} for k, (v, s) in d.items()} for m, d in table.items()}
        typer.echo(json.dumps({"model": model_name, "profile": profile.name, "defaults": found}))
    else:
        _print(table, model_name, profile.name)


def _print(table: dict, model_name: str, profile_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for name, found in table.items():
        view = Table(title=f"{name} on {model_name} (profile: {profile_name})", title_justify="left")
        for column in ("option", "default", "source"):
            view.add_column(column)
        for field_name, (value, source) in found.items():
            view.add_row(f"--{field_name.replace('_', '-')}", str(value), source)
        console.print(view)


def settings_markdown(names: list[str]) -> str:
    """Each method's settings as declared, with the defaults real models and the embedded world get."""
    from erasectl.erasure import resolve_defaults
    from erasectl.methods import get_method
    from erasectl.profiles import PaperProfile
    from erasectl.world.profile import MMDiTWorldProfile, WorldProfile

    lines = [
        "# Settings of every method",
        "",
        "Made by `erasectl defaults --markdown` from each method's declarations; `tests/test_methods.py` checks this page is current.",
        "Real models get the paper's default; the embedded shapes world its own, chosen on tuning concepts and seeds (`docs/tuning/`);",
        "the MMDiT model of the same world (`--model shapes-mmdit`) the UNet model's unless its column says otherwise.",
    ]
    for name in names:
        method = get_method(name)
        paper, world = resolve_defaults(name, PaperProfile(), {}), resolve_defaults(name, WorldProfile(), {})
        mmdit = resolve_defaults(name, MMDiTWorldProfile(), {})
        lines += [
            "",
            f"## {name}",
            "",
            method.summary,
            "",
            "| option | meaning | real models | source | embedded world | MMDiT world |",
            "|---|---|---|---|---|---|",
        ]
        for setting, declaration in method.config_class.declarations().items():
            ours, theirs = world[setting][0], mmdit[setting][0]
            cell = (
                "same" if ours == paper[setting][0] else f"{ours} ({world[setting][1].removeprefix('shapes world: ')})"
            )
            other = "same" if theirs == ours else f"{theirs} ({mmdit[setting][1].removeprefix('MMDiT shapes world: ')})"
            row = [f"`{declaration.option}`", declaration.help, f"{paper[setting][0]}", paper[setting][1], cell, other]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"
