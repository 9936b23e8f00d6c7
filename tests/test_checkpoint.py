"""Erased-weight checkpoints through the CLI: written as promised, refused when they do not fit."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from erasectl.assets import embedded_pipeline_dir
from erasectl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("erase") / "run"
    result = runner.invoke(app, ["erase", "--concept", "circle", "--steps", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out / "erased.safetensors"


def _one_line_exit_2(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


def test_checkpoint_holds_only_changed_cross_attention_tensors_with_recipe(checkpoint):
    with safe_open(str(checkpoint), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
    assert keys and all(k.startswith("unet.") and ".attn2." in k for k in keys)
    assert metadata["erasectl.method"] == "esd" and json.loads(metadata["erasectl.concepts"]) == ["circle"]
    recipe = json.loads(metadata["erasectl.recipe"])
    assert recipe["config"]["parameter_group"] == "esd-x" and recipe["steps"] == 3
    assert metadata["erasectl.base_model"] == "embedded:shapes-sd" and len(metadata["erasectl.base_fingerprint"]) == 64
    assert set(json.loads(metadata["erasectl.versions"])) >= {"erasectl", "torch", "diffusers", "transformers"}


def test_erase_never_overwrites_an_output(checkpoint):
    before = checkpoint.read_bytes()
    _one_line_exit_2(["erase", "--concept", "circle", "--steps", "1", "--out", str(checkpoint.parent)], "--force")
    assert checkpoint.read_bytes() == before


def test_checkpoint_of_a_different_base_is_refused(checkpoint, tmp_path):
    other = tmp_path / "other-base"
    shutil.copytree(embedded_pipeline_dir(), other)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(other / "unet")
    with torch.no_grad():
        next(p for n, p in unet.named_parameters() if ".attn2.to_k." in n).add_(0.01)
    unet.save_pretrained(other / "unet")
    _one_line_exit_2(
        [
            "compare",
            "--prompts",
            "a ring",
            "--n",
            "1",
            "--checkpoint",
            str(checkpoint),
            "--model",
            str(other),
            "--out",
            str(tmp_path / "g.png"),
        ],
        "different weights",
    )
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p.write_bytes(b"\x00garbage" * 10), "not a readable safetensors"),
        (lambda p: p.write_bytes(b""), "not a readable safetensors"),
        (lambda p: save_file({"unet.x": torch.zeros(1)}, str(p)), "not an erasectl checkpoint"),
        (
            lambda p: save_file(
                {"vae.encoder.x": torch.zeros(1)}, str(p), metadata={"erasectl.format": "erasectl.erased-weights"}
            ),
            "unexpected keys",
        ),
        (
            lambda p: save_file(
                {"unet.not.a.parameter": torch.zeros(1)},
                str(p),
                metadata={"erasectl.format": "erasectl.erased-weights", "erasectl.base_model": "embedded:shapes-sd"},
            ),
            "not a parameter",
        ),
    ],
)
def test_bad_checkpoint_files_are_refused(make, needle, tmp_path):
    path = tmp_path / "bad.safetensors"
    make(path)
    _one_line_exit_2(
        ["compare", "--prompts", "a ring", "--checkpoint", str(path), "--out", str(tmp_path / "g.png")], needle
    )


def test_truncated_checkpoint_is_refused(checkpoint, tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    _one_line_exit_2(
        ["compare", "--prompts", "a ring", "--checkpoint", str(path), "--out", str(tmp_path / "g.png")],
        "truncated or corrupt",
    )


def test_a_run_folder_stands_for_its_checkpoint(checkpoint, tmp_path):
    """erase's run folder names its erased.safetensors; a folder without one is refused in a line."""
    by_file = runner.invoke(
        app,
        [
            "generate",
            "--checkpoint",
            str(checkpoint),
            "--prompts",
            "a red circle",
            "--n",
            "1",
            "--steps",
            "5",
            "--out",
            str(tmp_path / "f"),
            "--json",
        ],
    )
    by_folder = runner.invoke(
        app,
        [
            "generate",
            "--checkpoint",
            str(checkpoint.parent),
            "--prompts",
            "a red circle",
            "--n",
            "1",
            "--steps",
            "5",
            "--out",
            str(tmp_path / "d"),
            "--json",
        ],
    )
    assert by_file.exit_code == 0 and by_folder.exit_code == 0, by_folder.output
    assert json.loads(by_folder.stdout)["model"] == json.loads(by_file.stdout)["model"] == checkpoint.parent.name
    drawn = [sorted(p.read_bytes() for p in (tmp_path / out).glob("0*.png")) for out in ("f", "d")]
    assert len(drawn[0]) == 1 and drawn[0] == drawn[1]
    empty = tmp_path / "empty-run"
    empty.mkdir()
    _one_line_exit_2(
        ["compare", "--prompts", "a ring", "--checkpoint", str(empty), "--out", str(tmp_path / "g.png")],
        "without erased.safetensors",
    )
    _one_line_exit_2(
        ["compare", "--prompts", "a ring", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "g.png")],
        "does not exist",
    )
    assert not (tmp_path / "g.png").exists()


def test_pickle_checkpoints_are_refused(tmp_path):
    path = tmp_path / "erased.ckpt"
    torch.save({"unet.x": torch.zeros(1)}, path)
    _one_line_exit_2(
        ["compare", "--prompts", "a ring", "--checkpoint", str(path), "--out", str(tmp_path / "g.png")], "pickle"
    )


def test_compare_uses_the_newest_checkpoint_and_labels_columns(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "circle-esd").mkdir(parents=True)
    shutil.copy(checkpoint, tmp_path / "runs" / "circle-esd" / "erased.safetensors")
    result = runner.invoke(
        app, ["compare", "--prompts", "a ring,a disc", "--n", "2", "--steps", "5", "--out", "cmp.png", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["models"] == ["base", "circle-esd"] and summary["seeds"] == [0, 1]
    from PIL import Image

    with Image.open(tmp_path / "cmp.png") as grid:
        assert grid.width >= 4 * 128 and grid.height >= 2 * 128
