"""Models in: a single-file checkpoint read offline with a local config, a hub id with no hub,
and SDXL's packed conditioning matching what its pipeline feeds the UNet."""

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from erasectl.assets import embedded_pipeline_dir
from erasectl.cli import app
from erasectl.models import load_pipeline

runner = CliRunner()


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    """The embedded model written as one file in the original LDM key layout."""
    from erasectl.ldm_layout import pipeline_to_ldm

    path = tmp_path_factory.mktemp("single") / "shapes.safetensors"
    save_file(pipeline_to_ldm(load_pipeline()), str(path))
    return path


def test_single_file_loads_offline_with_a_local_config(single_file):
    from_file = load_pipeline(str(single_file), config=embedded_pipeline_dir())
    from_folder = load_pipeline()
    for component in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(from_file, component).state_dict(), getattr(from_folder, component).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), component


def test_single_file_without_config_says_what_to_pass(single_file, tmp_path):
    result = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(single_file),
            "--prompts",
            "a red circle",
            "--n",
            "1",
            "--out",
            str(tmp_path / "g"),
        ],
    )
    assert result.exit_code == 2
    assert "--model-config" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()


def test_erase_from_a_single_file_and_reuse_its_config(single_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "uce",
            "--model",
            str(single_file),
            "--model-config",
            str(embedded_pipeline_dir()),
            "--out",
            str(out),
            "--quiet",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    from erasectl.checkpoint import ErasedCheckpoint

    checkpoint = ErasedCheckpoint.load(out / "erased.safetensors")
    assert checkpoint.base_model == str(single_file) and checkpoint.base_config == str(embedded_pipeline_dir())
    # No --model-config now: the checkpoint names the config its base was read with.
    result = runner.invoke(
        app,
        [
            "generate",
            "--checkpoint",
            str(out / "erased.safetensors"),
            "--prompts",
            "a red circle",
            "--n",
            "1",
            "--out",
            str(tmp_path / "g"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "g" / "generation.json").read_text())["images"]


def test_a_hub_id_without_the_hub_is_one_line_naming_it(tmp_path):
    result = runner.invoke(
        app,
        [
            "generate",
            "--model",
            "someone/not-cached-model",
            "--prompts",
            "a red circle",
            "--n",
            "1",
            "--out",
            str(tmp_path / "g"),
        ],
    )
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "someone/not-cached-model" in line and "HF_HUB_OFFLINE" in line and len(line.splitlines()) == 1


def test_sdxl_conditioning_is_what_its_pipeline_feeds_the_unet(tmp_path):
    """Packed rows unpack to the pipeline's own prompt embeddings, pooled embedding and time ids."""
    from diffusers import DiffusionPipeline
    from tiny_models import tiny_pipeline

    from erasectl.architecture import encode_prompts, family, unet_inputs

    pipeline = DiffusionPipeline.from_pretrained(tiny_pipeline(tmp_path, "sdxl"))
    assert family(pipeline) == "sdxl" and family(load_pipeline()) == "sd1"
    prompts = ["a red circle", "a blue ring"]
    embeds, _, pooled, _ = pipeline.encode_prompt(
        prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    inputs = unet_inputs(pipeline.unet, encode_prompts(pipeline, prompts))
    assert torch.equal(inputs["encoder_hidden_states"], embeds)
    assert torch.equal(inputs["added_cond_kwargs"]["text_embeds"], pooled)
    size = pipeline.default_sample_size * pipeline.vae_scale_factor
    assert inputs["added_cond_kwargs"]["time_ids"].tolist() == [[size, size, 0, 0, size, size]] * 2


def test_a_tokenizer_claiming_8192_tokens_takes_the_encoders_length(tmp_path):
    """Some tokenizer configs say 8192 (or nothing, which reads as 1e30): the text encoder's 77
    position embeddings decide the prompt length."""
    import json
    import shutil

    from erasectl.assets import embedded_pipeline_dir
    from erasectl.models import load_pipeline

    folder = tmp_path / "model"
    shutil.copytree(embedded_pipeline_dir(), folder)
    config_path = folder / "tokenizer" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = 8192
    config_path.write_text(json.dumps(config))
    pipeline = load_pipeline(str(folder))
    assert pipeline.tokenizer.model_max_length == 77
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "uce",
            "--model",
            str(folder),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
