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
    result = _fails(
        ["erase", "--concept", "circle", "--steps", "20", "--lr", "1e30", "--out", str(out), "--quiet"], 1, "at step"
    )
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


def test_pickle_weights_need_allow_pickle(tmp_path):
    from erasectl.models import load_pipeline

    folder = tmp_path / "pickled"
    load_pipeline().save_pretrained(folder, safe_serialization=False)
    assert list((folder / "unet").glob("*.bin")) and not list((folder / "unet").glob("*.safetensors"))
    args = ["generate", "--model", str(folder), "--prompts", "a ring", "--n", "1", "--steps", "2"]
    _fails([*args, "--out", str(tmp_path / "refused")], 2, "--allow-pickle")
    assert not (tmp_path / "refused").exists()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "allowed"), "--allow-pickle", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "pickle" in result.stderr  # the warning


def test_prompts_cannot_write_outside_the_output_folder(tmp_path):
    out = tmp_path / "out"
    prompt = "../../" + "x/" * 50 + "..\\evil"
    result = runner.invoke(
        app, ["generate", "--prompts", prompt, "--n", "1", "--steps", "2", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(out in p.parents for p in written)
    names = [p.name for p in out.glob("0*.png")]
    assert len(names) == 1 and ".." not in names[0] and "/" not in names[0] and len(names[0]) < 100


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["erase", "--steps", "abc"], "Invalid value for '--steps'"),
        (["evaluate", "--no-such-option", "0"], "No such option"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_mistyped_command_lines_are_one_line_and_exit_2(argv, needle, monkeypatch, capsys):
    """What the parser itself rejects goes through the installed entry point, not CliRunner."""
    import sys

    from erasectl.cli import main

    monkeypatch.setattr(sys, "argv", ["erasectl", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "--help" in err and len(err.strip().splitlines()) == 1, err


def test_an_output_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    _fails(
        ["generate", "--prompts", "a ring", "--n", "1", "--out", str(blocker / "images")],
        2,
        "cannot create output folder",
    )
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize(
    "method, request_args, config_args",
    [
        ("esd", {}, {"steps": 5, "lr": 1e30}),
        ("ablate", {"anchor": "shape"}, {"steps": 5, "lr": 1e30, "anchor_images": 4}),
    ],
)
def test_a_failed_erasure_leaves_the_unet_as_it_came(method, request_args, config_args):
    """The pipeline is the caller's: eval mode, its requires_grad flags and no gradients, after a raise too."""
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.errors import TrainingDiverged
    from erasectl.models import load_pipeline
    from erasectl.world.profile import WorldProfile

    pipeline = load_pipeline()
    unet = pipeline.unet
    unet.eval()
    flags = {name: p.requires_grad for name, p in unet.named_parameters()}
    with pytest.raises(TrainingDiverged):
        erase_concepts(
            pipeline,
            method,
            ErasureRequest(["circle"], WorldProfile(), **request_args),
            build_config(method, WorldProfile(), config_args),
        )
    assert not unet.training
    assert {name: p.requires_grad for name, p in unet.named_parameters()} == flags
    assert all(p.grad is None for p in unet.parameters())
