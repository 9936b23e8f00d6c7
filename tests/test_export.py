"""export: every format reloads through its consumer's own loader and draws the erased images."""

import json

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from erasectl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def ablate_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate") / "run"
    result = runner.invoke(app, ["erase", "--concept", "circle", "--method", "ablate", "--anchor", "shape", "--steps", "20", "--anchor-images", "16", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "erased.safetensors"


@pytest.mark.parametrize(
    "kind, extra, max_difference",
    [
        ("diffusers", [], 0),
        ("single-file", [], 0),
        # A LoRA at full rank reproduces the delta up to float rounding.
        ("lora", ["--rank", "64"], 1),
        ("kohya", ["--rank", "64"], 1),
        # At the default 99.9% energy it is lossy: measured 6 levels of 255 on this erasure. A
        # wrong alpha or a dropped module shows up as tens of levels (91 was seen with per-module
        # alphas in a kohya file).
        ("lora", [], 10),
        ("kohya", [], 10),
    ],
)
def test_export_round_trip(kind, extra, max_difference, ablate_checkpoint, tmp_path):
    out = tmp_path / kind
    result = runner.invoke(app, ["export", str(ablate_checkpoint), "--format", kind, "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    verification = summary["verification"]
    assert verification["images_compared"] == 4
    assert verification["max_pixel_difference"] <= max_difference, verification
    if kind in ("lora", "kohya"):
        assert summary["min_kept_energy"] >= (1.0 - 1e-9 if extra else 0.999)
    if kind != "diffusers":
        with safe_open(summary["file"], framework="pt") as handle:
            metadata = handle.metadata()
            keys = list(handle.keys())
        assert metadata["modelspec.sai_model_spec"] == "1.0.0" and metadata["erasectl.method"] == "ablate"
        assert json.loads(metadata["erasectl.concepts"]) == ["circle"]
        prefix = {"single-file": "model.diffusion_model.", "lora": "unet.", "kohya": "lora_unet_"}[kind]
        assert any(k.startswith(prefix) for k in keys)
        if kind == "single-file":
            assert any(k.startswith("first_stage_model.") for k in keys)
            assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)


def test_export_refuses_unknown_format(ablate_checkpoint, tmp_path):
    result = runner.invoke(app, ["export", str(ablate_checkpoint), "--format", "ckpt", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown format" in result.stderr
    assert not (tmp_path / "x").exists()
