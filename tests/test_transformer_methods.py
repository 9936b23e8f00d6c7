"""The erasure methods on SD3 and FLUX (diffusion transformers, flow matching), on tiny pipelines
built offline: the flow-matching process is the formulas, sampling is the pipelines' own, and
every method that applies moves its own objective on held-out inputs."""

import math

import pytest
import torch
from tiny_models import tiny_transformer_pipeline

from erasectl.architecture import (
    component_name,
    denoiser,
    encode_prompts,
    guidance_kind,
    latent_shape,
    latents_of,
    pooled_rows,
    predict_noise,
    text_projections,
    token_rows,
    with_guidance,
)
from erasectl.diffusion import FlowMatching, draw_timesteps, noise_target, sampling_scheduler, training_scheduler
from erasectl.erasure import ErasureRequest, erase_concepts, get_method
from erasectl.generation import draw_latents
from erasectl.methods import ablate
from erasectl.methods.uce import concept_rows
from erasectl.models import load_pipeline
from erasectl.parameter_groups import group_members
from erasectl.profiles import PaperProfile
from erasectl.sampling import sample_trajectory

FAMILIES = ["sd3", "sd3-no-t5", "flux-dev", "flux-schnell"]
# the trained objectives: sd3-no-t5 has sd3's transformer (its T5 rows zeros), checked by the CLI tests
TRAINED_FAMILIES = ["sd3", "flux-dev", "flux-schnell"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformers")
    return {family: tiny_transformer_pipeline(root, family) for family in FAMILIES}


def load(folders, family):
    return load_pipeline(str(folders[family]))


def test_flow_matching_noise_and_target_are_the_formulas(folders):
    pipeline = load(folders, "sd3")
    process = training_scheduler(pipeline)
    assert isinstance(process, FlowMatching)
    n = process.config.num_train_timesteps
    u = torch.arange(n, 0, -1, dtype=torch.float64) / n  # the table, noisiest first
    shift = pipeline.scheduler.config.shift  # SD3: 3.0
    assert torch.allclose(process.timesteps.double(), n * shift * u / (1 + (shift - 1) * u), atol=1e-3)
    generator = torch.Generator().manual_seed(0)
    timesteps = draw_timesteps(process, 64, generator)
    assert set(timesteps.tolist()) <= set(process.timesteps.tolist()) and len(set(timesteps.tolist())) > 30
    clean, noise = torch.randn(64, 4, 2, 2), torch.randn(64, 4, 2, 2)
    sigma = (timesteps / n).view(-1, 1, 1, 1)
    assert torch.allclose(process.add_noise(clean, noise, timesteps), (1 - sigma) * clean + sigma * noise, atol=1e-6)
    assert torch.equal(noise_target(process, clean, noise, timesteps), noise - clean)


@pytest.mark.parametrize("family", ["sd3", "flux-dev", "flux-schnell"])
def test_sampling_steps_through_the_states_the_pipeline_reaches(folders, family):
    """erasectl's own sampling loop (ESD's x_t) under the family's guidance equals the pipeline's
    own states, step by step: the conditioning, the denoiser call and the sampler are the pipeline's."""
    pipeline = load(folders, family)
    module, steps, guidance = denoiser(pipeline), 4, 3.0
    _, size, _ = latent_shape(pipeline, 32)
    captured = []

    def capture(_, step, timestep, tensors):
        captured.append(tensors["latents"].clone())
        return {}

    extra = {"max_sequence_length": 256} if family == "flux-schnell" else {}
    pipeline(
        "a red circle", height=32, width=32, num_inference_steps=steps, guidance_scale=guidance,
        generator=torch.Generator().manual_seed(3), output_type="latent", callback_on_step_end=capture, **extra,
    )  # fmt: skip
    channels = latent_shape(pipeline)[0]
    noise = torch.randn((1, channels, size, size), generator=torch.Generator().manual_seed(3))
    kind = guidance_kind(module)
    conditional = with_guidance(module, encode_prompts(pipeline, ["a red circle"]), guidance)
    unconditional = encode_prompts(pipeline, [""])
    scheduler = sampling_scheduler(pipeline, steps, latent_size=size)
    with torch.no_grad():
        states, _ = sample_trajectory(
            lambda x, t, c: predict_noise(module, x, t, c), scheduler, noise, conditional, unconditional, guidance,
            kind=kind,
        )  # fmt: skip
    assert kind == {"sd3": "classifier-free", "flux-dev": "distilled", "flux-schnell": "none"}[family]
    theirs = [latents_of(pipeline, latents, 32) for latents in captured]
    for ours, reached in zip(states[1:], theirs):
        assert torch.allclose(ours, reached, atol=1e-5)
    assert len(states) == steps


def test_conditioning_carries_the_pooled_vector_and_the_distilled_guidance(folders):
    pipeline = load(folders, "flux-dev")
    module = denoiser(pipeline)
    tokens, pooled, _ = pipeline.encode_prompt("a red circle", prompt_2=None, max_sequence_length=512)
    packed = encode_prompts(pipeline, ["a red circle"])
    assert torch.allclose(token_rows(module, packed), tokens, atol=1e-4)  # with and without autograd
    assert torch.allclose(pooled_rows(module, packed), pooled, atol=1e-4)
    inputs = with_guidance(module, packed, 5.0)
    assert torch.equal(pooled_rows(module, inputs), pooled_rows(module, packed))
    from erasectl.architecture import denoiser_inputs

    latents = torch.zeros(1, 4, 4, 4)
    assert denoiser_inputs(module, latents, torch.tensor([500.0]), inputs)["guidance"].tolist() == [5.0]
    assert denoiser_inputs(module, latents, torch.tensor([500.0]), packed)["guidance"].tolist() == [3.5]
    assert denoiser_inputs(module, latents, torch.tensor([500.0]), packed)["timestep"].tolist() == [0.5]


def test_the_mmdit_parameter_groups_name_the_text_path(folders):
    flux = denoiser(load(folders, "flux-dev"))
    text_path = group_members(flux, "esd-x")
    assert text_path and all(".attn.add_" in n or ".attn.to_add_out." in n for n in text_path)
    assert all(n.startswith("transformer_blocks.") for n in text_path)
    assert set(group_members(flux, "kv")) == {n for n in text_path if "add_k_proj" in n or "add_v_proj" in n}
    others = group_members(flux, "esd-u")
    assert not set(others) & set(text_path)
    assert any(n.startswith("single_transformer_blocks.") and ".attn.to_k." in n for n in others)
    assert not any(n.startswith(("context_embedder", "x_embedder", "time_text_embed", "proj_out")) for n in others)
    assert [n for n, _ in text_projections(flux)] == ["context_embedder"]
    assert [n for n, _ in text_projections(flux, "pooled")] == ["time_text_embed.text_embedder.linear_1"]
    assert component_name(flux) == "transformer"


def _pooled(pipeline, prompt):
    return pooled_rows(denoiser(pipeline), encode_prompts(pipeline, [prompt]))[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["uce", "nullspace", "rece"])
def test_a_closed_form_moves_the_concept_toward_its_guide_on_the_text_maps(folders, family, method):
    """The closed forms' objective on a prompt they were not solved on (the bare concept): the edited
    ``context_embedder`` sends the concept's last token row in each stream (SD3: CLIP's and T5's;
    FLUX: T5's) where the original sends the guide's, and for UCE and RECE the pooled map does the
    same with the pooled vector, while the guide's own pooled output moves less."""
    pipeline = load(folders, family)
    module = denoiser(pipeline)
    embedder, pooled_map = module.context_embedder, module.time_text_embed.text_embedder.linear_1
    rows, guide_rows = concept_rows(pipeline, ["red circle"], ["red circle"], "last", ["square"])
    assert len(rows) == (2 if family == "sd3" else 1)
    pooled, guide_pooled = _pooled(pipeline, "red circle"), _pooled(pipeline, "square")
    before_w, before_pooled_w = embedder.weight.detach().clone(), pooled_map.weight.detach().clone()
    config = get_method(method).config_class()
    request = ErasureRequest(["red circle"], PaperProfile(), anchor="square", model_name=str(folders[family]))
    checkpoint = erase_concepts(pipeline, method, request, config)
    assert checkpoint.tensors and all(k.startswith("transformer.") for k in checkpoint.tensors)

    def gap(weight, inputs, guide, original):
        return float(torch.linalg.norm(inputs @ weight.T - guide @ original.T))

    with torch.no_grad():
        # UCE solves for this; RECE's rounds then re-edit the edited weights, keeping the empty prompt
        factor = 0.5 if method == "uce" else 1
        assert gap(embedder.weight, rows, guide_rows, before_w) < factor * gap(before_w, rows, guide_rows, before_w)
        if method != "nullspace":
            before = gap(before_pooled_w, pooled, guide_pooled, before_pooled_w)
            assert (
                gap(pooled_map.weight, pooled, guide_pooled, before_pooled_w) < (0.5 if method == "uce" else 1) * before
            )
            assert gap(pooled_map.weight, guide_pooled, guide_pooled, before_pooled_w) < before


def _noised(pipeline, clean, seed):
    process = training_scheduler(pipeline)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = draw_timesteps(process, len(clean), generator)
    return process.add_noise(clean, noise, timesteps), timesteps


@pytest.mark.parametrize("family", TRAINED_FAMILIES)
def test_esd_lowers_its_own_objective_on_held_out_states(folders, family):
    """ESD's loss, ||v(x_t, c) - (v*(x_t) - eta (v*(x_t, c) - v*(x_t)))||^2 with the frozen base's
    predictions v*, falls on states x_t sampled under the concept from noise it never trained on."""
    pipeline = load(folders, family)
    module = denoiser(pipeline)
    config = get_method("esd").config_class(
        steps=60, lr=2e-3, mode="fast", sample_size=16, ddim_steps=4, batch_size=4, trajectory_reuse=5
    )
    concept = with_guidance(module, encode_prompts(pipeline, ["red circle"]), config.start_guidance)
    empty = with_guidance(module, encode_prompts(pipeline, [""]), config.start_guidance)
    channels, size, _ = latent_shape(pipeline, 16)
    noise = torch.randn((8, channels, size, size), generator=torch.Generator().manual_seed(99))
    scheduler = sampling_scheduler(pipeline, 4, latent_size=size)
    with torch.no_grad():
        states, timesteps = sample_trajectory(
            lambda x, t, c: predict_noise(module, x, t, c), scheduler, noise, concept, empty, config.start_guidance,
            kind=guidance_kind(module),
        )  # fmt: skip
    noisy, timesteps = torch.cat(states), timesteps.repeat_interleave(len(noise))

    def predict(conditioning):
        with torch.no_grad():
            return predict_noise(module, noisy, timesteps, conditioning.expand(len(noisy), -1, -1))

    target = predict(empty) - config.negative_guidance * (predict(concept) - predict(empty))
    before = float(torch.nn.functional.mse_loss(predict(concept), target))
    erase_concepts(pipeline, "esd", ErasureRequest(["red circle"], PaperProfile()), config)
    after = float(torch.nn.functional.mse_loss(predict(concept), target))
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("family", TRAINED_FAMILIES)
def test_ablation_lowers_its_own_objective_on_held_out_states(folders, family):
    """Concept Ablation's loss, ||v(x_t, concept) - v*(x_t, anchor)||^2, falls on anchor images it
    never trained on (other seeds), noised by the flow."""
    pipeline = load(folders, family)
    module = denoiser(pipeline)
    config = get_method("ablate").config_class(
        steps=60, lr=2e-3, anchor_images=16, anchor_steps=2, anchor_size=16, batch_size=4, anchor_data="latents",
        weight_decay=0.0,
    )  # fmt: skip
    concept_prompt, anchor_prompt = "a photo of a red circle", "a photo of a circle"  # the profile's first template
    clean, _ = draw_latents(pipeline, [anchor_prompt], 8, 1234, 2, config.anchor_guidance, 8, 16)
    noisy, timesteps = _noised(pipeline, clean, 5)
    concept, anchor = encode_prompts(pipeline, [concept_prompt]), encode_prompts(pipeline, [anchor_prompt])

    def predict(conditioning):
        with torch.no_grad():
            return predict_noise(module, noisy, timesteps, conditioning.expand(len(noisy), -1, -1))

    target = predict(anchor)
    before = float(torch.nn.functional.mse_loss(predict(concept), target))
    result = ablate.erase(pipeline, [concept_prompt], [anchor_prompt], config)
    after = float(torch.nn.functional.mse_loss(predict(concept), target))
    assert after < 0.7 * before, (before, after)
    assert all(k.startswith("transformer.transformer_blocks.") and ".attn.add_" in k for k in result.erased)
    assert math.isfinite(result.losses[-1])


@pytest.mark.parametrize("family", ["sd3", "flux-dev"])
def test_the_null_space_prior_encoded_short_equals_it_encoded_at_full_length(folders, family):
    """The prior's CLIP rows are encoded padded to the longest prompt, not to 77 (CLIP is causal,
    so the rows up to the end token are the same); T5 keeps its own length."""
    from erasectl.methods.nullspace import short_prompts

    pipeline = load(folders, family)
    prompts = [("a red circle", "red circle"), ("a photo of a blue square", "blue square"), ("a ring", "ring")]
    texts, words = [p for p, _ in prompts], [w for _, w in prompts]
    full, _ = concept_rows(pipeline, texts, words, "through-eos")
    with short_prompts(pipeline, prompts, "through-eos"):
        short, _ = concept_rows(pipeline, texts, words, "through-eos")
        assert pipeline.tokenizer_max_length < 77
    assert pipeline.tokenizer_max_length == 77
    assert torch.allclose(full, short, atol=1e-5)
