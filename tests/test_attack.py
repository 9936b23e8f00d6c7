"""erasectl attack: the attacks learn what they claim, their files load where users load them, they
resume, and evaluate reports and gates their success."""

import json

import pytest
import torch
from typer.testing import CliRunner

from erasectl.attacks import (
    PLACEHOLDER,
    AttackConfig,
    concept_latents,
    denoising_loss,
    learned_token,
    noise_draws,
    placeholder_token,
    prompt_search,
    soft_prompt,
)
from erasectl.cli import app
from erasectl.models import load_erased_pipeline, load_pipeline
from erasectl.run_state import Interrupted, RunControl

runner = CliRunner()
PROMPTS = ["a red circle", "a blue circle"]


def stop_at(count: int):
    """A stop request that comes at the ``count``-th time the loop asks (once per finished step)."""
    calls = {"n": 0}

    def requested():
        calls["n"] += 1
        return calls["n"] == count

    return requested


@pytest.fixture(scope="module")
def concept_images():
    return concept_latents(load_pipeline(), PROMPTS, AttackConfig(images=8, image_steps=10))


def test_soft_prompt_learns_a_token_the_erased_model_denoises_the_concept_with(uce_circle_checkpoint, concept_images):
    erased = load_erased_pipeline(uce_circle_checkpoint)
    latents, which = concept_images
    config = AttackConfig(images=8, steps=25, batch_size=8)
    result = soft_prompt(erased, "circle", PROMPTS, latents, which, config, "shape")
    index, noisy, timesteps, target = noise_draws(erased, latents, 32, torch.Generator().manual_seed(7))
    prompts = [f"a {'red' if which[i] == 0 else 'blue'} {PLACEHOLDER}" for i in index.tolist()]
    with torch.no_grad(), placeholder_token(erased, "shape"):
        before = float(denoising_loss(erased, prompts, noisy, timesteps, target))
    with torch.no_grad(), learned_token(erased, result.embeddings):
        after = float(denoising_loss(erased, prompts, noisy, timesteps, target))
    assert after < before, (before, after)
    assert set(result.embeddings) == {"clip_l"} and result.prompts == [f"a red {PLACEHOLDER}", f"a blue {PLACEHOLDER}"]
    # the pipeline is as it was: its tokenizer has no placeholder and no hook is left
    assert PLACEHOLDER not in erased.tokenizer.get_vocab()
    assert not erased.text_encoder.get_input_embeddings()._forward_hooks


def test_soft_prompt_resumes_to_the_same_embedding(uce_circle_checkpoint, concept_images, tmp_path):
    latents, which = concept_images
    config = AttackConfig(images=8, steps=8, batch_size=4)
    straight = soft_prompt(
        load_erased_pipeline(uce_circle_checkpoint), "circle", PROMPTS, latents, which, config, "shape"
    )
    control = RunControl(state_dir=tmp_path / "states", stop_requested=stop_at(3))
    with pytest.raises(Interrupted):
        soft_prompt(
            load_erased_pipeline(uce_circle_checkpoint),
            "circle",
            PROMPTS,
            latents,
            which,
            config,
            "shape",
            control=control,
        )
    resumed_control = RunControl(state_dir=tmp_path / "states", resume_from=control.latest())
    resumed = soft_prompt(
        load_erased_pipeline(uce_circle_checkpoint),
        "circle",
        PROMPTS,
        latents,
        which,
        config,
        "shape",
        control=resumed_control,
    )
    assert torch.equal(resumed.embeddings["clip_l"], straight.embeddings["clip_l"])
    assert resumed.losses == straight.losses


def test_prompt_search_reports_the_loss_of_the_prefix_it_returns(uce_circle_checkpoint, concept_images):
    erased = load_erased_pipeline(uce_circle_checkpoint)
    latents, which = concept_images
    vocabulary = ["shape", "ring", "square", "red", "striped", "circle", "disc"]
    result = prompt_search(
        erased,
        "circle",
        PROMPTS,
        latents,
        which,
        AttackConfig(prefix_tokens=2, candidates=4, rounds=1, draws=8),
        vocabulary,
    )
    words = result.prefix.split()
    assert len(words) == 2 and set(words) <= set(vocabulary) - {"circle"}
    assert result.prompts == [f"{result.prefix} {p}" for p in PROMPTS]
    # the loss it reports for the prefix it returns is that prefix's loss on the same noise draws
    config = AttackConfig(prefix_tokens=2, candidates=4, rounds=1, draws=8)
    index, noisy, timesteps, target = noise_draws(
        erased, latents, config.draws, torch.Generator().manual_seed(config.seed)
    )
    chosen = [f"{result.prefix} {PROMPTS[which[i]]}" for i in index.tolist()]
    with torch.no_grad():
        recomputed = float(denoising_loss(erased, chosen, noisy, timesteps, target))
    assert recomputed == pytest.approx(result.losses[-1], rel=1e-5)


def test_attack_success_interval_is_wilsons():
    """Wilson's score interval, written out: centre (k + z^2/2) / (n + z^2), half-width
    z sqrt(k (n - k) / n + z^2 / 4) / (n + z^2)."""
    import math

    from erasectl.statistics import interval95

    z = 1.959963984540054
    for k, n in ((17, 32), (0, 32), (4, 32), (32, 32), (3, 4)):
        centre = (k + z * z / 2) / (n + z * z)
        half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
        assert interval95(k / n, n) == pytest.approx([max(0.0, centre - half), min(1.0, centre + half)], abs=1e-4)


def test_attack_command_writes_embedding_grid_and_success_and_the_embedding_loads_in_diffusers(
    uce_circle_checkpoint, tmp_path
):
    out = tmp_path / "attack"
    result = runner.invoke(
        app,
        [
            "attack",
            "--checkpoint",
            str(uce_circle_checkpoint),
            "--method",
            "soft-prompt",
            "--steps",
            "10",
            "--images",
            "4",
            "--n-per-prompt",
            "1",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # a share of the attack's images: a whole number of them
    assert summary["images"] == 4 and summary["erased_plain_accuracy"] <= 0.25
    assert round(summary["attack_success"] * summary["images"]) == pytest.approx(
        summary["attack_success"] * summary["images"]
    )
    # four images say little: the interval around the share is wide, and contains it
    low, high = summary["attack_success_interval95"]
    assert 0 <= low <= summary["attack_success"] <= high <= 1 and high - low > 0.4
    assert (out / "grid.png").is_file() and json.loads((out / "attack.json").read_text())["versions"]["torch"]
    # diffusers' own textual-inversion loader reads the file; its token gives the same conditioning as ours
    from safetensors.torch import load_file

    from erasectl.architecture import encode_prompts

    learned = load_file(out / "embedding.safetensors")["emb_params"][0]
    ours = load_erased_pipeline(uce_circle_checkpoint)
    with learned_token(ours, {"clip_l": learned}):
        expected = encode_prompts(ours, [f"a red {PLACEHOLDER}"])
    theirs = load_erased_pipeline(uce_circle_checkpoint)
    theirs.load_textual_inversion(str(out / "embedding.safetensors"), token="<stolen>")
    assert torch.allclose(encode_prompts(theirs, ["a red <stolen>"]), expected, atol=1e-5)


def test_evaluate_attacks_every_model_and_gates_on_success(uce_circle_checkpoint, tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(uce_circle_checkpoint),
            "--n-per-prompt",
            "1",
            "--attack",
            "prompt-search",
            "--attack-budget-s",
            "5",
            "--attack-runs",
            "2",
            "--max-attack-success",
            "0",
            "--out",
            str(tmp_path / "ev"),
            "--json",
        ],
    )
    metrics = json.loads(result.stdout)
    rows = metrics["tables"]["attacks"]
    assert [(r["model"], r["attack"]) for r in rows] == [("run", "prompt-search")]
    # two runs from images and noise of their own, judged on the same seeds: the row is their mean
    runs = rows[0]["attack_success_runs"]
    assert len(runs) == 2 and rows[0]["attack_seeds"] == [0, 1000]
    assert rows[0]["attack_success"] == round(sum(runs) / 2, 4) and rows[0]["attack_success_worst"] == max(runs)
    headline = {r["model"]: r for r in metrics["tables"]["erased_vs_surrounding"]}
    assert headline["run"]["attack_success"] == {"prompt-search": rows[0]["attack_success"]}
    # the world's second reading, by outline: the base draws circles and every neighbour, UCE no circles
    assert headline["base"]["erased_outline_accuracy"] >= 0.75 and headline["base"]["held_out_outline_accuracy"] >= 0.75
    assert headline["run"]["erased_outline_accuracy"] <= 0.25 and rows[0]["attack_success_outline"] is not None
    low, high = rows[0]["attack_success_interval95"]
    assert low <= rows[0]["attack_success"] <= high
    assert f"({low:.2f}-{high:.2f})" in (tmp_path / "ev" / "report.md").read_text()
    gate = [g for g in metrics["gates"] if g["gate"] == "max-attack-success"]
    assert len(gate) == 1 and gate[0]["passed"] == (rows[0]["attack_success"] == 0)
    assert result.exit_code == (0 if gate[0]["passed"] else 1)
    bad = runner.invoke(
        app,
        ["evaluate", "--checkpoint", str(uce_circle_checkpoint), "--attack", "jailbreak", "--out", str(tmp_path / "x")],
    )
    assert bad.exit_code == 2 and "unknown --attack" in bad.output
    bad = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(uce_circle_checkpoint),
            "--attack",
            "soft-prompt",
            "--attack-runs",
            "0",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and "--attack-runs must be at least 1" in bad.output and not (tmp_path / "x").exists()


def test_prompt_search_resumes_to_the_same_prefix(uce_circle_checkpoint, concept_images, tmp_path):
    erased = load_erased_pipeline(uce_circle_checkpoint)
    latents, which = concept_images
    vocabulary = ["shape", "ring", "square", "red", "striped", "cross", "plus", "hoop"]
    config = AttackConfig(prefix_tokens=2, candidates=3, rounds=2, draws=8)
    straight = prompt_search(erased, "circle", PROMPTS, latents, which, config, vocabulary)
    control = RunControl(state_dir=tmp_path / "states", stop_requested=stop_at(2))
    with pytest.raises(Interrupted):
        prompt_search(erased, "circle", PROMPTS, latents, which, config, vocabulary, control=control)
    resumed = prompt_search(
        erased,
        "circle",
        PROMPTS,
        latents,
        which,
        config,
        vocabulary,
        control=RunControl(state_dir=tmp_path / "states", resume_from=control.latest()),
    )
    assert resumed.prefix == straight.prefix and resumed.losses == straight.losses
