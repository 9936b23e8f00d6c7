"""Every method runs on tiny, randomly initialised pipelines of the SD families, built from configs."""

import json

import pytest
import torch
from tiny_models import tiny_pipeline
from typer.testing import CliRunner

from erasectl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def tiny_family(request, tmp_path_factory):
    return request.param, tiny_pipeline(tmp_path_factory.mktemp(request.param), request.param)


@pytest.mark.parametrize(
    "method_args",
    [
        ["--method", "esd", "--steps", "2", "--ddim-steps", "4", "--sample-size", "16"],
        ["--method", "esd", "--mode", "faithful", "--steps", "2", "--ddim-steps", "4", "--sample-size", "16"],
        ["--method", "esd", "--mode", "faithful-fp32", "--steps", "2", "--ddim-steps", "4"],
        ["--method", "esd", "--parameter-group", "esd-u", "--steps", "2", "--ddim-steps", "4", "--sample-size", "16"],
        ["--method", "ablate", "--anchor", "shape", "--steps", "2", "--anchor-images", "2"],
        ["--method", "uce", "--preserve", "ring"],
        ["--method", "nullspace", "--parameter-group", "kv"],
        ["--method", "rece", "--preserve", "ring", "--rounds", "2"],
        [
            "--method",
            "advunlearn",
            "--parameter-group",
            "esd-all",
            "--preserve",
            "ring",
            "--steps",
            "3",
            "--warmup-steps",
            "1",
            "--attack-steps",
            "2",
            "--ddim-steps",
            "4",
        ],
    ],
    ids=["esd-x", "esd-faithful", "esd-faithful-fp32", "esd-u", "ablate", "uce", "nullspace", "rece", "advunlearn"],
)
def test_every_method_runs_on_each_family(tiny_family, method_args, tmp_path):
    family, folder = tiny_family
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["erase", "--concept", "circle", "--model", str(folder), "--out", str(out), "--quiet", *method_args]
    )
    assert result.exit_code == 0, result.output
    from erasectl.models import load_erased_model

    changed = load_erased_model(out / "erased.safetensors").checkpoint.tensors
    assert changed and all(k.startswith("unet.") for k in changed)
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(folder / "unet").state_dict()
    assert any(not torch.equal(base[k[len("unet.") :]], t) for k, t in changed.items()), f"{family}: nothing changed"


def test_text_encoder_erasure_on_each_family(tiny_family, tmp_path):
    """AdvUnlearn's own choice, the text encoders trained (both on SDXL) under a frozen UNet: only
    their transformer layers change, under the released layout's names, and the kohya LoRA (what
    AUTOMATIC1111 and ComfyUI read) and one original-layout file reproduce its images (export
    compares them through diffusers' own loaders)."""
    from transformers import CLIPTextModel

    from erasectl.checkpoint import key_name
    from erasectl.models import load_erased_model

    family, folder = tiny_family
    out = tmp_path / "run"
    args = [
        "--method",
        "advunlearn",
        "--parameter-group",
        "text-encoder",
        "--steps",
        "3",
        "--warmup-steps",
        "1",
        "--attack-steps",
        "2",
        "--ddim-steps",
        "4",
    ]
    result = runner.invoke(
        app, ["erase", "--concept", "circle", "--model", str(folder), "--out", str(out), "--quiet", *args]
    )
    assert result.exit_code == 0, result.output
    changed = load_erased_model(out / "erased.safetensors").checkpoint.tensors
    assert {k.partition(".")[0] for k in changed} == (
        {"text_encoder", "text_encoder_2"} if family == "sdxl" else {"text_encoder"}
    )
    assert all(".text_model.encoder.layers." in k for k in changed)
    base = {
        key_name("text_encoder", k): t
        for k, t in CLIPTextModel.from_pretrained(folder / "text_encoder").state_dict().items()
    }
    assert any(
        not torch.equal(base[k.partition(".")[2]], t) for k, t in changed.items() if k.startswith("text_encoder.")
    ), f"{family}: nothing changed"
    for kind, extra in (("kohya", ["--rank", "64"]), ("single-file", [])):
        result = runner.invoke(
            app,
            [
                "export",
                str(out / "erased.safetensors"),
                "--format",
                kind,
                "--out",
                str(tmp_path / kind),
                "--json",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        verification = json.loads(result.stdout)["verification"]
        assert verification["max_pixel_difference"] <= (1 if kind == "kohya" else 0), (kind, verification)


# The key each family's original code reads its (last) text encoder from.
ORIGINAL_TEXT_KEYS = {
    "sd1": "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    "sd2": "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight",
    "sdxl": "conditioner.embedders.1.model.text_projection",
}


def test_single_file_round_trip_on_each_family(tiny_family, tmp_path):
    """An erasure exported as one original-layout file reloads bit-identically through diffusers'
    from_single_file (export verifies it), and erasectl takes that file back as --model."""
    from safetensors import safe_open

    family, folder = tiny_family
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "uce",
            "--preserve",
            "ring",
            "--model",
            str(folder),
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "export",
            str(out / "erased.safetensors"),
            "--format",
            "single-file",
            "--out",
            str(tmp_path / "file"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert exported["verification"]["max_pixel_difference"] == 0
    with safe_open(exported["file"], "pt") as handle:
        keys = set(handle.keys())
        architecture = handle.metadata()["modelspec.architecture"]
    assert ORIGINAL_TEXT_KEYS[family] in keys
    assert {"sd1": "v1", "sd2": "v2", "sdxl": "xl"}[family] in architecture
    if family == "sdxl":
        assert "model.diffusion_model.label_emb.0.0.weight" in keys
    again = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "triangle",
            "--method",
            "uce",
            "--model",
            exported["file"],
            "--model-config",
            str(folder),
            "--out",
            str(tmp_path / "again"),
            "--quiet",
        ],
    )
    assert again.exit_code == 0, again.output


def test_evaluate_on_a_family_pipeline_uses_an_open_set_and_measures_drift(tiny_family, tmp_path):
    """A real model's protocol: a CLIP judge from a folder, the named concepts plus the open set as
    candidates, drift and FID/KID beside accuracy (mechanics: the weights are random)."""
    from erasectl.assets import embedded_judge_dir
    from erasectl.evaluation.protocol import OPEN_SET

    family, folder = tiny_family
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--model",
            str(folder),
            "--method",
            "uce",
            "--preserve",
            "ring",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(out / "erased.safetensors"),
            "--surrounding",
            "ring,square",
            "--judge",
            str(embedded_judge_dir()),
            "--n-per-prompt",
            "1",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "ev"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["protocol"]["candidates"] == ["circle", "ring", "square", *OPEN_SET]
    rows = {r["concept"]: r for r in metrics["tables"]["per_concept"] if r["model"] == "run"}
    assert rows["ring"]["split"] == "preserved" and rows["square"]["split"] == "held-out"
    # the erased concept's images moved from the base's of the same seeds
    erased = next(r for r in metrics["tables"]["per_concept"] if r["model"] == "run" and r["role"] == "erased")
    assert erased["judge_distance"] > 0 and erased["ssim"] < 1, erased
    assert [r["over"] for r in metrics["tables"]["distribution"]] == ["held-out surroundings"]


@pytest.mark.parametrize("attack", ["soft-prompt", "prompt-search"])
def test_attacks_run_on_each_family_with_a_clip_judge(tiny_family, attack, tmp_path):
    """Mechanics on SD 1.x / 2.x (v-prediction) / SDXL (two text encoders: the learned token gets
    an embedding in each): the attack learns, judges with a CLIP folder and writes its files."""
    from erasectl.assets import embedded_judge_dir

    family, folder = tiny_family
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--model",
            str(folder),
            "--method",
            "uce",
            "--preserve",
            "ring",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "attack",
            "--checkpoint",
            str(out / "erased.safetensors"),
            "--method",
            attack,
            "--judge",
            str(embedded_judge_dir()),
            "--surrounding",
            "ring,square",
            "--images",
            "2",
            "--steps",
            "2",
            "--rounds",
            "1",
            "--candidates",
            "2",
            "--prefix-tokens",
            "1",
            "--n-per-prompt",
            "1",
            "--out",
            str(tmp_path / "attack"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    hits = summary["attack_success"] * summary["images"]  # a share of the attack's images
    assert round(hits) == pytest.approx(hits) and summary["candidates"][:3] == ["circle", "ring", "square"]
    assert summary["attack_success_outline"] is None  # the outline reader is the shapes world's alone
    if attack == "soft-prompt":
        from safetensors.torch import load_file

        assert set(load_file(tmp_path / "attack" / "embedding.safetensors")) == (
            {"clip_l", "clip_g"} if family == "sdxl" else {"emb_params"}
        )
    else:
        assert len(summary["prefix"].split()) == 1
