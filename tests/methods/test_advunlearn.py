"""AdvUnlearn: ESD on the text encoder against an inner soft-prompt attack."""

import json

import torch
from typer.testing import CliRunner

from erasectl.attacks import (
    PLACEHOLDER,
    placeholder_token,
)
from erasectl.cli import app
from erasectl.methods import get_method
from erasectl.models import load_pipeline

runner = CliRunner()


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
        warmup_steps=0,
        attack_steps=10,
        attack_lr=1e-2,
        attack_position="replace",
        attack_states="shared",
        attack_init="latest",
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
    # a real model: COCO's objects less those sharing a word with the concept, its words not kept
    assert "chair" in real and not {"hot", "dog", "hot dog"} & set(real)
    words = ErasureRequest(["hot dog"], PaperProfile(), keep_words=True).resolved(retained).preserve
    assert words[:2] == ["hot", "dog"] and words[2:] == real  # --keep-words: its words alone first
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


def test_the_retain_set_is_theirs_less_what_overlaps_the_concept_and_never_a_person():
    from erasectl.profiles import PaperProfile

    profile = PaperProfile()
    full = profile.retain_concepts(["nudity"])
    assert len(full) == 237 and full[:3] == ["chair", "fridge", "banana"]
    people = {"person", "people", "man", "woman", "men", "women", "boy", "girl", "child", "human", "body"}
    assert not people & {word for name in full for word in name.split()}
    assert profile.templates("chair", "retain") == ["a photo of {}"]
    without = profile.retain_concepts(["street sign"])
    assert "street sign" not in without and not any("sign" in name.split() for name in without)
    assert len(without) < len(full)


def test_each_attack_update_starts_from_a_random_vocabulary_token(tmp_path):
    """attack_init random (their README's command): the token an update starts from is a
    vocabulary row, drawn anew for each update and the same for the same step."""
    from tiny_models import tiny_pipeline

    from erasectl.attacks import random_token_embeddings
    from erasectl.methods.advunlearn import Adversary, AdvUnlearnConfig
    from erasectl.methods.common import TrainedUNet
    from erasectl.parameter_groups import select_parameters

    pipeline = load_pipeline(str(tiny_pipeline(tmp_path / "sd1", "sd1")))
    table = pipeline.text_encoder.get_input_embeddings().weight
    first, again, other = (random_token_embeddings(pipeline, s)["clip_l"] for s in (5, 5, 6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert (table == first).all(dim=1).any()
    model = TrainedUNet(pipeline.unet, select_parameters(pipeline.unet, "esd-x", ("esd-x",)))
    latents, timesteps = torch.randn((1, 4, 8, 8)), torch.tensor([500])
    hidden = torch.zeros(1, 77, 32)
    config = AdvUnlearnConfig(warmup_steps=0, attack_steps=1, attack_lr=1e-12, attack_states="shared")
    assert config.attack_init == "random"
    with placeholder_token(pipeline, "shape") as vectors:
        adversary = Adversary(pipeline, ["a circle"], ["circle"], config, vectors)
        starts = []
        for step in (0, 1):
            adversary.trained_prompts(
                step, model, latents, timesteps, [0], [step], model.frozen(latents, timesteps, hidden), 1
            )
            starts.append(vectors["clip_l"].detach().clone())
    for step, start in enumerate(starts):  # a step of lr 1e-12 leaves the drawn start
        expected = random_token_embeddings(pipeline, config.seed * 100_003 + step)["clip_l"]
        torch.testing.assert_close(start, expected, rtol=0, atol=1e-6)
    assert not torch.equal(starts[0], starts[1])
