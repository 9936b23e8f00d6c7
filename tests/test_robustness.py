"""Hard inputs and numerical faults: one line, the right exit code, nothing half-written."""

import pytest
from typer.testing import CliRunner

from erasectl.cli import app

runner = CliRunner()


def _fails(args, code, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


def test_diverging_loss_stops_naming_the_step_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = _fails(["erase", "--concept", "circle", "--steps", "20", "--lr", "1e30", "--out", str(out), "--quiet"], 1, "at step")
    assert "lr=1e+30" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--concept", "circle", "--method", "nope"], "unknown method 'nope'"),
        (["--concept", "circle", "--parameter-group", "everything"], "unknown parameter group"),
        (["--concept", "circle", "--method", "ablate"], "needs --anchor"),
        (["--concept", "   "], "concept is empty"),
        (["--concept", "grumpy cat"], "does not know 'grumpy'"),
        (["--concept", "circle", "--steps", "0"], "steps must be at least 1"),
        (["--concept", "circle", "--lr", "-1"], "lr must be positive"),
        (["--concept", "circle", "--negative-guidance", "0"], "must be positive"),
        (["--concept", "circle", "--anchor", "shape"], "--anchor is not an option of --method esd"),
        (["--concept", "circle", "--target", "noise"], "--target is not an option of --method esd"),
        (["--concept", "circle", "--model", "/no/such/model"], "does not exist"),
        (["--concept", "circle", "--auto-preserve", "0"], "--auto-preserve must be at least 1"),
    ],
)
def test_bad_erase_inputs_exit_2(args, needle, tmp_path):
    _fails(["erase", "--out", str(tmp_path / "run"), *args], 2, needle)
    assert not (tmp_path / "run").exists()
