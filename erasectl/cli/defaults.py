from __future__ import annotations

import json
from pathlib import Path

import typer

from erasectl.cli.common import MODEL_CONFIG, user_errors


@user_errors
def defaults(
    method: str = typer.Option(None, "--method", help="One method (esd, ablate, uce); default: every method."),
    model: str = typer.Option(None, "--model", help="The model whose defaults to print (a folder, a hub id or a single file); default: the embedded shapes model. Nothing is loaded but its marker."),
    mode: str = typer.Option(None, "--mode", help="esd: the defaults under this --mode."),
    model_config: Path = MODEL_CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print the defaults as JSON on stdout."),
) -> None:
    """Print every method's hyper-parameter defaults for a model, and where each comes from.

    Real models get each paper's (or its authors' script's) settings; the embedded shapes world
    gets its own, measured on it. Which set applies is read from the model folder, not its name.
    """
    from erasectl.erasure import resolve_defaults
    from erasectl.methods import METHODS, get_method
    from erasectl.models import model_profile, resolve_model

    names = [method] if method else list(METHODS)
    for name in names:
        get_method(name)  # an unknown method is a one-line error
    model_name, _ = resolve_model(model)
    profile = model_profile(model, model_config)
    given = {"mode": mode} if mode else {}
    table = {name: resolve_defaults(name, profile, given if name == "esd" else {}) for name in names}
    if as_json:
        typer.echo(json.dumps({"model": model_name, "profile": profile.name, "defaults": {m: {k: {"value": v, "source": s} for k, (v, s) in d.items()} for m, d in table.items()}}))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for name, found in table.items():
        view = Table(title=f"{name} on {model_name} (profile: {profile.name})", title_justify="left")
        view.add_column("option")
        view.add_column("default")
        view.add_column("source")
        for field_name, (value, source) in found.items():
            view.add_row(f"--{field_name.replace('_', '-')}", str(value), source)
        console.print(view)
