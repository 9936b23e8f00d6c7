"""The ``erasectl`` command line: a thin layer over the library that owns all printing."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

import erasectl
from erasectl.cli import attack as _attack
from erasectl.cli import compare as _compare
from erasectl.cli import defaults as _defaults
from erasectl.cli import erase as _erase
from erasectl.cli import evaluate as _evaluate
from erasectl.cli import export as _export
from erasectl.cli import generate as _generate
from erasectl.cli import train_world as _train_world

EXIT_INTERNAL = 1


class Commands(TyperGroup):
    """The commands, with ``erase`` built only when it is run or its own help is shown."""

    listing = False

    def format_help(self, ctx, formatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return names if "erase" in names else ["erase", *names]

    def get_command(self, ctx, name: str):
        if name == "erase" and "erase" not in self.commands:
            if self.listing:  # the command list shows its first docstring line only
                return typer.core.TyperCommand("erase", help=_erase.erase.__doc__)
            single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            single.command("erase")(_erase.command())
            self.add_command(typer.main.get_command(single), "erase")
        return super().get_command(ctx, name)


app = typer.Typer(
    name="erasectl",
    cls=Commands,
    help="Erase a concept from a Stable Diffusion model, and prove what the erasure did and damaged.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"erasectl {erasectl.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Every command runs on the embedded shapes-world model by default, offline, on a CPU."""


app.command("generate")(_generate.generate)
app.command("compare")(_compare.compare)
app.command("evaluate")(_evaluate.evaluate)
app.command("export")(_export.export)
app.command("train-world")(_train_world.train_world)
app.command("defaults")(_defaults.defaults)
app.command("attack")(_attack.attack)


def main() -> None:
    """Run the CLI; a mistyped option or value is one line and exit 2, like every user error."""
    import sys

    try:
        from typer._click import exceptions as click  # typer 0.2x carries its own click
    except ImportError:
        from click import exceptions as click

    try:
        code = app(standalone_mode=False, prog_name="erasectl")
    except click.NoArgsIsHelpError as error:
        typer.echo(error.ctx.get_help() if error.ctx else str(error), err=True)
        sys.exit(2)
    except click.UsageError as error:
        where = error.ctx.command_path if error.ctx else "erasectl"
        typer.echo(f"error: {error.format_message().rstrip('.')}; see `{where} --help`", err=True)
        sys.exit(2)
    except click.ClickException as error:
        typer.echo(f"error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception:  # not the user's mistake: say so, with the traceback to report
        import traceback

        traceback.print_exc()
        typer.echo(
            f"erasectl {erasectl.__version__}: internal error (above); this is a bug in erasectl or a library it uses, not in your command. Please report it with the traceback.",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)
