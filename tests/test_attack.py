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
from erasectl.methods import get_method
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
def uce_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("uce") / "run"
    result = runner.invoke(app, ["erase", "--concept", "circle", "--method", "uce", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "erased.safetensors"


@pytest.fixture(scope="module")
def concept_images():
    return concept_latents(load_pipeline(), PROMPTS, AttackConfig(images=8, image_steps=10))


def test_soft_prompt_learns_a_token_the_erased_model_denoises_the_concept_with(uce_checkpoint, concept_images):
    erased = load_erased_pipeline(uce_checkpoint)
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


def test_soft_prompt_resumes_to_the_same_embedding(uce_checkpoint, concept_images, tmp_path):
    latents, which = concept_images
    config = AttackConfig(images=8, steps=8, batch_size=4)
    straight = soft_prompt(load_erased_pipeline(uce_checkpoint), "circle", PROMPTS, latents, which, config, "shape")
    control = RunControl(state_dir=tmp_path / "states", stop_requested=stop_at(3))
    with pytest.raises(Interrupted):
        soft_prompt(
            load_erased_pipeline(uce_checkpoint), "circle", PROMPTS, latents, which, config, "shape", control=control
        )
    resumed_control = RunControl(state_dir=tmp_path / "states", resume_from=control.latest())
    resumed = soft_prompt(
        load_erased_pipeline(uce_checkpoint),
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


def test_prompt_search_reports_the_loss_of_the_prefix_it_returns(uce_checkpoint, concept_images):
    erased = load_erased_pipeline(uce_checkpoint)
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

    from erasectl.attacks import interval95

    z = 1.959963984540054
    for k, n in ((17, 32), (0, 32), (4, 32), (32, 32), (3, 4)):
        centre = (k + z * z / 2) / (n + z * z)
        half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
        assert interval95(k / n, n) == pytest.approx([max(0.0, centre - half), min(1.0, centre + half)], abs=1e-4)


def test_attack_command_writes_embedding_grid_and_success_and_the_embedding_loads_in_diffusers(
    uce_checkpoint, tmp_path
):
    out = tmp_path / "attack"
    result = runner.invoke(
        app,
        [
            "attack",
            "--checkpoint",
            str(uce_checkpoint),
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
    ours = load_erased_pipeline(uce_checkpoint)
    with learned_token(ours, {"clip_l": learned}):
        expected = encode_prompts(ours, [f"a red {PLACEHOLDER}"])
    theirs = load_erased_pipeline(uce_checkpoint)
    theirs.load_textual_inversion(str(out / "embedding.safetensors"), token="<stolen>")
    assert torch.allclose(encode_prompts(theirs, ["a red <stolen>"]), expected, atol=1e-5)


def test_evaluate_attacks_every_model_and_gates_on_success(uce_checkpoint, tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(uce_checkpoint),
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
    assert f"{low:.3f}-{high:.3f}" in (tmp_path / "ev" / "report.md").read_text()
    gate = [g for g in metrics["gates"] if g["gate"] == "max-attack-success"]
    assert len(gate) == 1 and gate[0]["passed"] == (rows[0]["attack_success"] == 0)
    assert result.exit_code == (0 if gate[0]["passed"] else 1)
    bad = runner.invoke(
        app, ["evaluate", "--checkpoint", str(uce_checkpoint), "--attack", "jailbreak", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "unknown --attack" in bad.output
    bad = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(uce_checkpoint),
            "--attack",
            "soft-prompt",
            "--attack-runs",
            "0",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and "--attack-runs must be at least 1" in bad.output and not (tmp_path / "x").exists()


def test_rece_adversarial_map_is_the_identity_without_an_edit_and_rece_erases_more_rows(tmp_path):
    from erasectl.methods.rece import adversarial_map

    torch.manual_seed(0)
    weights = {"k": torch.randn(8, 6), "v": torch.randn(8, 6)}
    assert torch.allclose(adversarial_map(weights, weights, 1e-3), torch.eye(6, dtype=torch.float64), atol=1e-8)
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "rece",
            "--rounds",
            "2",
            "--attack-rounds",
            "0",
            "--out",
            str(tmp_path / "rece"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    recipe = json.loads(result.stdout)
    assert recipe["adversarial_rows"] == 2 * (recipe["erased_rows"] // 3) and recipe["config"]["rounds"] == 2


def test_attack_rounds_erase_what_the_attack_finds(tmp_path):
    """One round in the loop: the soft-prompt token's rows join the erased ones, and the round is
    recorded in the recipe (how much it buys is measured by benchmarks/attacks.py)."""
    plain = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "rece",
            "--rounds",
            "0",
            "--attack-rounds",
            "0",
            "--out",
            str(tmp_path / "plain"),
            "--json",
        ],
    )
    looped = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "rece",
            "--rounds",
            "0",
            "--attack-rounds",
            "1",
            "--attack-steps",
            "5",
            "--out",
            str(tmp_path / "looped"),
            "--json",
        ],
    )
    assert plain.exit_code == 0 and looped.exit_code == 0, looped.output
    first, second = json.loads(plain.stdout), json.loads(looped.stdout)
    assert [r["round"] for r in second["attack_rounds"]] == [1] and second["erased_rows"] > first["erased_rows"]
    assert "attack_rounds" not in first
    # the defence's attack learns from images of its own, never those evaluate's attack draws
    from erasectl.attacks import defence_config

    pipeline = load_pipeline()
    evaluated, _ = concept_latents(pipeline, PROMPTS, AttackConfig(seed=0))
    defended, _ = concept_latents(pipeline, PROMPTS, AttackConfig(seed=second["attack_rounds"][0]["seed"]))
    assert second["attack_rounds"][0]["seed"] == defence_config(0, 0, 5).seed != 0
    assert not torch.allclose(evaluated, defended)


def test_prompt_search_resumes_to_the_same_prefix(uce_checkpoint, concept_images, tmp_path):
    erased = load_erased_pipeline(uce_checkpoint)
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


def test_advunlearn_inner_attack_moves_its_token_towards_the_concept():
    """The inner attack lowers its own loss: the model prompted with the adversarial prompt comes
    closer to the frozen model's prediction for the concept."""
    from erasectl.architecture import encode_prompts
    from erasectl.methods.advunlearn import Adversary, AdvUnlearnConfig
    from erasectl.methods.common import TrainedUNet
    from erasectl.parameter_groups import select_parameters

    pipeline = load_pipeline()
    model = TrainedUNet(pipeline.unet, select_parameters(pipeline.unet, "esd-x", ("esd-x",)))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((4, 4, 32, 32), generator=generator)
    timesteps = torch.tensor([900, 700, 500, 300])
    prompts = ["a circle"]
    hidden = encode_prompts(pipeline, prompts * 4)
    concept = model.frozen(latents, timesteps, hidden)
    config = AdvUnlearnConfig(
        warmup_steps=0, attack_steps=10, attack_lr=1e-2, attack_position="replace", attack_states="shared"
    )
    with placeholder_token(pipeline, "shape") as vectors:
        adversary = Adversary(pipeline, prompts, ["circle"], config, vectors)
        start = {k: v.detach().clone() for k, v in vectors.items()}

        def gap():
            with torch.no_grad():
                return float(
                    torch.nn.functional.mse_loss(
                        model(latents, timesteps, encode_prompts(pipeline, adversary.forms[0] * 4)), concept
                    )
                )

        before = gap()
        trained = adversary.trained_prompts(0, model, latents, timesteps, [0] * 4, [0, 1, 2, 3], concept, 4)
        after = gap()
        assert trained == adversary.forms[0] * 4 and adversary.updates == 1
        assert not torch.equal(start["clip_l"], vectors["clip_l"])
    assert after < 0.8 * before, (before, after)
    assert all(
        not p.requires_grad or p.grad is None for p in pipeline.unet.parameters()
    )  # the attack never leaves UNet gradients


def _adversary_setting():
    """The embedded model with its cross-attention as the trained group, four x_t with their
    timesteps, and the frozen model's prediction for "a circle" there."""
    from erasectl.architecture import encode_prompts
    from erasectl.methods.common import TrainedUNet
    from erasectl.parameter_groups import select_parameters

    pipeline = load_pipeline()
    model = TrainedUNet(pipeline.unet, select_parameters(pipeline.unet, "esd-x", ("esd-x",)))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((4, 4, 32, 32), generator=generator)
    timesteps = torch.tensor([900, 700, 500, 300])
    concept = model.frozen(latents, timesteps, encode_prompts(pipeline, ["a circle"] * 4))
    return pipeline, model, generator, latents, timesteps, concept


def test_advunlearn_attack_moves_its_token_on_the_first_attack_samples_only(tmp_path):
    """--attack-samples 1 (the paper's one sample per attack step): the token moves on the batch's
    first adversarial sample alone, exactly as an attack on a batch of that sample would; every
    sample is still trained on the adversarial prompt. Split over two processes, the parts pick
    the same samples as one process."""
    from erasectl.methods.advunlearn import Adversary, AdvUnlearnConfig

    pipeline, model, _, latents, timesteps, concept = _adversary_setting()

    def token_after(samples, batch):
        config = AdvUnlearnConfig(
            warmup_steps=0, attack_steps=3, attack_lr=1e-2, attack_states="shared", attack_samples=samples
        )
        with placeholder_token(pipeline, "shape") as vectors:
            adversary = Adversary(pipeline, ["a circle"], ["circle"], config, vectors)
            trained = adversary.trained_prompts(
                0, model, latents[:batch], timesteps[:batch], [0] * batch, list(range(batch)), concept[:batch], batch
            )
            assert trained == [f"{PLACEHOLDER} a circle"] * batch
            return vectors["clip_l"].detach().clone()

    first = token_after(1, 4)
    assert torch.equal(first, token_after(0, 1))  # the first sample alone
    assert not torch.equal(first, token_after(0, 4))  # every sample: another token
    for samples, share in ((1, 1.0), (3, 1.0), (2, 0.5)):
        adversary = Adversary(
            pipeline, ["a circle"], ["circle"], AdvUnlearnConfig(attack_samples=samples, attack_share=share), {}
        )
        step, batch = 5, 8
        ids = [step * batch + q for q in range(batch)]
        chosen = [i for i in range(batch) if adversary.adversarial(ids[i])]
        one, total = adversary._attacked(step, ids, chosen, batch)
        parts = [
            adversary._attacked(
                step, ids[4 * p : 4 * p + 4], [i - 4 * p for i in chosen if 4 * p <= i < 4 * p + 4], batch
            )
            for p in (0, 1)
        ]
        assert total == samples == parts[0][1] == parts[1][1] and len(one) == samples
        assert one == [*parts[0][0], *[i + 4 for i in parts[1][0]]] and set(one) <= set(chosen)
    bad = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "advunlearn",
            "--attack-samples",
            "-1",
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert bad.exit_code == 2 and "attack_samples must be 0" in bad.output and not (tmp_path / "bad").exists()


def test_advunlearn_attack_can_draw_fresh_states_for_every_step(tmp_path):
    """--attack-states fresh (AdvUnlearn's own attack): every attack step asks for new states, and
    the token is moved on those; the trained prompts stay the iteration's own samples'."""
    from erasectl.architecture import encode_prompts
    from erasectl.methods.advunlearn import Adversary, AdvUnlearnConfig

    pipeline, model, generator, latents, timesteps, concept = _adversary_setting()
    calls = []

    def fresh_states(count):
        calls.append(count)
        noise = torch.randn((count, 4, 32, 32), generator=generator)
        steps = torch.tensor([800, 400])[:count]
        return (
            noise,
            steps,
            torch.tensor([0] * count),
            model.frozen(noise, steps, encode_prompts(pipeline, ["a circle"] * count)),
            1.0,
        )

    with placeholder_token(pipeline, "shape") as vectors:
        start = vectors["clip_l"].detach().clone()
        adversary = Adversary(
            pipeline,
            ["a circle"],
            ["circle"],
            AdvUnlearnConfig(warmup_steps=0, attack_steps=3, attack_states="fresh", attack_samples=2),
            vectors,
        )
        trained = adversary.trained_prompts(
            0, model, latents, timesteps, [0] * 4, [0, 1, 2, 3], concept, 4, fresh_states
        )
        assert calls == [2, 2, 2] and not torch.equal(vectors["clip_l"], start)
    assert trained == [f"{PLACEHOLDER} a circle"] * 4  # the trained prompts are still the iteration's own samples'
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "advunlearn",
            "--attack-states",
            "new",
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert (
        result.exit_code == 2
        and "attack_states must be one of shared, fresh" in result.output
        and not (tmp_path / "bad").exists()
    )


def test_advunlearn_is_esd_until_the_warm_up_ends_then_trains_on_the_adversarial_prompt(tmp_path):
    """With the warm-up as long as the run it learns exactly what ESD learns (same preservation);
    after it, the adversary changes what is learned, and the recipe says how often it moved."""
    from safetensors.torch import load_file

    common = [
        "--concept",
        "circle",
        "--steps",
        "4",
        "--trajectory-reuse",
        "2",
        "--preserve",
        "ring",
        "--parameter-group",
        "esd-all",
        "--negative-guidance",
        "1",
        "--quiet",
        "--json",
    ]
    runs = {
        "esd": ["--method", "esd"],
        "warm": ["--method", "advunlearn", "--warmup-steps", "4"],
        "adv": ["--method", "advunlearn", "--warmup-steps", "2", "--attack-steps", "2"],
    }
    tensors, recipes = {}, {}
    for name, args in runs.items():
        result = runner.invoke(app, ["erase", *args, *common, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        tensors[name], recipes[name] = load_file(str(tmp_path / name / "erased.safetensors")), json.loads(result.stdout)
    assert all(torch.equal(tensors["esd"][k], tensors["warm"][k]) for k in tensors["esd"])
    assert any(not torch.equal(tensors["esd"][k], tensors["adv"][k]) for k in tensors["esd"])
    assert (recipes["warm"]["adversary_updates"], recipes["adv"]["adversary_updates"]) == (0, 2)
    assert recipes["adv"]["preserve"] == ["ring"] and recipes["adv"]["preserve_source"] == "given"


def test_advunlearn_attack_share_spreads_the_adversarial_samples_evenly(tmp_path):
    """--attack-share: that share of the run's samples, spread evenly whatever the batch size."""
    from erasectl.methods.advunlearn import Adversary, AdvUnlearnConfig

    for share in (1.0, 0.5, 0.25):
        adversary = Adversary(None, ["a circle"], ["circle"], AdvUnlearnConfig(attack_share=share), {})
        picked = [adversary.adversarial(i) for i in range(64)]
        assert sum(picked) == 64 * share
        assert all(sum(picked[i : i + int(1 / share)]) == 1 for i in range(0, 64, int(1 / share)))
    # both: the iterations alternate between a token before the prompt and one in place of the
    # concept, each its own token, kept while the other is in use (and in resumable states)
    config = AdvUnlearnConfig(attack_share=0.5, attack_position="both", warmup_steps=0, attack_every=1000)
    vectors = {"clip_l": torch.nn.Parameter(torch.zeros(4))}
    adversary = Adversary(None, ["a circle"], ["circle"], config, vectors)
    trained = [
        adversary.trained_prompts(step, None, None, None, [0] * 8, list(range(8 * step, 8 * step + 8)), None, 8)
        for step in (1, 2)
    ]
    assert trained[0][0::2] == ["a circle"] * 4 and trained[0][1::2] == [f"a {PLACEHOLDER}"] * 4
    assert trained[1][1::2] == [f"{PLACEHOLDER} a circle"] * 4
    with torch.no_grad():
        vectors["clip_l"].fill_(1.0)  # the prefix token moves; the replacing one must not
    adversary.trained_prompts(3, None, None, None, [0] * 8, list(range(24, 32)), None, 8)
    assert torch.equal(vectors["clip_l"], torch.zeros(4))
    state = adversary.state()
    assert torch.equal(state["adversary.0.clip_l"], torch.ones(4)) and int(state["adversary.active"]) == 1
    resumed = Adversary(None, ["a circle"], ["circle"], config, {"clip_l": torch.nn.Parameter(torch.zeros(4))})
    resumed.restore(state)
    resumed.trained_prompts(4, None, None, None, [0] * 8, list(range(32, 40)), None, 8)
    assert torch.equal(resumed.vectors["clip_l"], torch.ones(4))
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "advunlearn",
            "--attack-share",
            "0",
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert (
        result.exit_code == 2 and "attack_share must be in (0, 1]" in result.output and not (tmp_path / "bad").exists()
    )


def test_text_encoder_erasure_leaves_the_unet_and_reloads_to_the_same_conditioning():
    """The text-encoder group (AdvUnlearn's choice) trains only the text encoder's layers: the UNet
    keeps its weights, the pipeline its flags, and the checkpoint applied to a fresh base gives the
    conditioning the erasure left in place."""
    from erasectl.architecture import encode_prompts
    from erasectl.checkpoint import fingerprint
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.world.profile import WorldProfile

    pipeline = load_pipeline()
    unet_before = fingerprint(pipeline.unet.state_dict())
    flags = [p.requires_grad for p in pipeline.text_encoder.parameters()]
    prompts = ["a red circle", "a blue square"]
    base = encode_prompts(pipeline, prompts)
    config = build_config("esd", WorldProfile(), {"steps": 6, "trajectory_reuse": 3, "parameter_group": "text-encoder"})
    checkpoint = erase_concepts(pipeline, "esd", ErasureRequest(["circle"], WorldProfile()), config)
    assert fingerprint(pipeline.unet.state_dict()) == unet_before
    assert [p.requires_grad for p in pipeline.text_encoder.parameters()] == flags
    assert checkpoint.tensors and all(
        k.startswith("text_encoder.text_model.encoder.layers.") for k in checkpoint.tensors
    )
    erased = encode_prompts(pipeline, prompts)
    assert not torch.allclose(erased[0], base[0])
    fresh = load_pipeline()
    checkpoint.apply(fresh)
    assert torch.equal(encode_prompts(fresh, prompts), erased)


def test_advunlearn_retains_what_evaluate_does_not_judge_and_refuses_bad_settings(tmp_path):
    from erasectl.erasure import ErasureRequest
    from erasectl.profiles import PaperProfile
    from erasectl.world.profile import WorldProfile
    from erasectl.world.protocol import world_protocol

    # the world retains no prompt on the generic noun (it may draw the concept), only a
    # multi-word concept's words alone, none of which evaluate judges as a surrounding
    retained = get_method("advunlearn").default_preservation
    kept = {
        concept: ErasureRequest([concept], WorldProfile()).resolved(retained).preserve
        for concept in ("circle", "blue square", "striped")
    }
    assert kept == {"circle": [], "blue square": ["blue shape", "square"], "striped": []}
    assert not set(kept["blue square"]) & set(world_protocol("blue square", None, None, None).surrounding)
    assert ErasureRequest(["circle"], WorldProfile(), preserve=["ring"]).resolved(retained).preserve == ["ring"]
    real = ErasureRequest(["hot dog"], PaperProfile()).resolved(retained).preserve
    # a multi-word concept's words alone, then COCO's objects less those sharing a word with it
    assert real[:2] == ["hot", "dog"] and "chair" in real and "hot dog" not in real and real.count("dog") == 1
    result = runner.invoke(
        app,
        [
            "erase",
            "--concept",
            "circle",
            "--method",
            "advunlearn",
            "--attack-position",
            "middle",
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert (
        result.exit_code == 2
        and "attack_position must be one of prefix, replace" in result.output
        and not (tmp_path / "bad").exists()
    )
