"""erasectl's paper modes against the authors' code, reproduced here the way their scripts compute.

ESD: the authors' current diffusers script (esd_sd.py) runs the pipeline with the frozen UNet and
the model's own scheduler for ``run_till_timestep`` steps, labels the state with
``scheduler.timesteps[run_till_timestep]`` and trains toward eps(c) - 2 (eps(c) - eps()).
UCE: the authors' script (uce_sd_erase.py) takes each prompt's embedding at
``attention_mask.sum() - 2`` (the last token before the end token), for the concept and the guide.
"""

import pytest
import torch
from tiny_models import tiny_pipeline

from erasectl.architecture import encode_prompts, predict_noise
from erasectl.diffusion import sampling_scheduler
from erasectl.methods.esd import faithful_state, guidance_target


@pytest.fixture(scope="module")
def sd1_pndm(tmp_path_factory):
    from erasectl.models import load_pipeline

    return load_pipeline(str(tiny_pipeline(tmp_path_factory.mktemp("sd1"), "sd1", "PNDMScheduler")))


@pytest.mark.parametrize("stop", [0, 3, 7])
def test_esd_faithful_states_labels_and_targets_equal_the_authors_script(sd1_pndm, stop):
    pipeline, steps, guidance = sd1_pndm, 10, 3.0
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(stop))
    # The authors' way: the pipeline itself, stopped when it reaches step `stop`.
    captured = {}

    def capture(pipe, index, timestep, tensors):
        if index == stop - 1:
            captured["latents"] = tensors["latents"].clone()
        return tensors

    pipeline(
        prompt="circle",
        latents=noise.clone(),
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="latent",
        callback_on_step_end=capture,
    )
    reference_state = captured["latents"] if stop else noise * pipeline.scheduler.init_noise_sigma
    reference_label = pipeline.scheduler.timesteps[stop]
    erase_embeds, null_embeds = pipeline.encode_prompt("circle", "cpu", 1, True, negative_prompt="")
    with torch.no_grad():
        erase = pipeline.unet(reference_state, reference_label, encoder_hidden_states=erase_embeds).sample
        null = pipeline.unet(reference_state, reference_label, encoder_hidden_states=null_embeds).sample
    reference_target = erase - 2.0 * (erase - null)  # negative_guidance 2

    scheduler = sampling_scheduler(pipeline, steps, "own")
    conditional, unconditional = encode_prompts(pipeline, ["circle"]), encode_prompts(pipeline, [""])

    def frozen(latents, timesteps, hidden):
        return predict_noise(pipeline.unet, latents, timesteps, hidden)

    with torch.no_grad():
        state, label = faithful_state(frozen, scheduler, noise, conditional, unconditional, guidance, stop)
        ours = guidance_target(frozen(state, label, conditional), frozen(state, label, unconditional), 1.0)
    assert type(scheduler) is type(pipeline.scheduler)
    assert torch.equal(state, reference_state), (state - reference_state).abs().max()
    assert int(label) == int(reference_label)
    torch.testing.assert_close(ours, reference_target, rtol=1e-5, atol=1e-6)


def test_uce_last_token_rows_are_the_authors_script_rows(sd1_pndm):
    from erasectl.architecture import token_rows
    from erasectl.methods.uce import concept_rows

    pipeline = sd1_pndm
    tokenizer = pipeline.tokenizer
    prompts, concepts = ["circle", "red circle", "a red striped circle"], ["circle", "red circle", "red striped circle"]
    for guide in ["", "ring", "blue striped ring"]:
        guides = [guide] * len(prompts)
        rows, guide_rows = concept_rows(pipeline, prompts, concepts, "last", guides)
        for index, (prompt, concept) in enumerate(zip(prompts, concepts)):
            guide_prompt = " ".join(prompt.replace(concept, guide).split())

            def reference_row(text):
                mask = tokenizer(
                    text,
                    padding="max_length",
                    max_length=tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                )["attention_mask"]
                return token_rows(pipeline.unet, encode_prompts(pipeline, [text]))[0, int(mask.sum()) - 2]

            torch.testing.assert_close(rows[index], reference_row(prompt).float())
            torch.testing.assert_close(guide_rows[index], reference_row(guide_prompt).float())


def test_uce_on_a_multi_word_concept_is_the_authors_edit_with_nothing_preserved(tmp_path):
    """A real model erases "red circle" as uce_sd_erase.py does: the phrase's last-token row guided to
    the empty prompt's, nothing preserved unless named; --keep-words is the only way to keep its words."""
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.models import load_pipeline
    from erasectl.profiles import PaperProfile

    folder = tiny_pipeline(tmp_path / "sd1", "sd1", "PNDMScheduler")
    difference, checkpoint, originals = uce_phrase_difference(load_pipeline(str(folder)))
    assert difference <= 1e-5
    assert checkpoint.recipe["preserve"] == [] and checkpoint.recipe["keep_words"] is False
    kept = load_pipeline(str(folder))
    config = build_config("uce", PaperProfile(), {})
    words = erase_concepts(kept, "uce", ErasureRequest(["red circle"], PaperProfile(), keep_words=True), config)
    assert words.recipe["preserve"] == ["red", "circle"] and words.recipe["keep_words"] is True
    name = next(iter(originals))
    key = f"unet.{name}.weight"
    moved = (words.tensors[key] - checkpoint.tensors[key]).norm() / (
        checkpoint.tensors[key] - originals[name].float()
    ).norm()
    assert moved > 0.05, f"keeping the words changed the edit by only {moved:.3f} of its norm"


def uce_phrase_difference(pipeline):
    """UCE's default (script) edit of "red circle" against uce_sd_erase.py's, written out:
    ``(largest relative difference, the checkpoint, the original weights)``."""
    from erasectl.architecture import token_rows
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.profiles import PaperProfile

    originals = _projection_weights(pipeline)
    config = build_config("uce", PaperProfile(), {})
    checkpoint = erase_concepts(pipeline, "uce", ErasureRequest(["red circle"], PaperProfile()), config)

    def last_row(text: str) -> torch.Tensor:  # the script's row: attention_mask.sum() - 2
        return token_rows(pipeline.unet, encode_prompts(pipeline, [text]))[0, _final_token(pipeline, text)].double()

    concept, guide = last_row("red circle")[:, None], last_row("")[:, None]
    expected = {}
    for name, w in originals.items():
        left = config.lamb * w + config.erase_scale * (w @ guide) @ concept.T
        right = config.lamb * torch.eye(w.shape[1], dtype=torch.float64) + config.erase_scale * concept @ concept.T
        expected[name] = left @ torch.linalg.inv(right)
    return largest_difference(checkpoint, expected), checkpoint, originals


# --- UCE's paper-era script and RECE's code, transcribed ---------------------------------------
# The transcriptions below follow the authors' loops line by line (per projection, per text pair),
# in float64 so that a difference in the computation, not in rounding, is what would fail.


def _reference_embedding(pipeline, text: str) -> torch.Tensor:
    """What the authors' scripts read: ``text_encoder(ids)[0]`` of the prompt padded to 77 (SD);
    for SDXL, diffusers' own ``encode_prompt`` (both encoders' states side by side)."""
    if hasattr(pipeline, "text_encoder_2"):
        return pipeline.encode_prompt(text, device="cpu", do_classifier_free_guidance=False)[0][0].double()
    tokenizer = pipeline.tokenizer
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    with torch.no_grad():
        return pipeline.text_encoder(torch.tensor([ids]))[0][0].double()


def _final_token(pipeline, text: str) -> int:
    tokenizer = pipeline.tokenizer
    mask = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    return sum(mask["attention_mask"]) - 2


def _train_erase_edit(pipeline, weights, old_texts, new_texts, retain_texts, lamb, erase_scale, preserve_scale):
    """train_erase.py's ``edit_model`` (UCE at 4502388^, also RECE's train_uce.py), technique
    ``replace``: rows from each text's final token to the end, cut to the farther one's length."""
    edited = {}
    for name, w in weights.items():
        mat1 = lamb * w
        mat2 = lamb * torch.eye(w.shape[1], dtype=torch.float64)
        for old_text, new_text in zip(old_texts, new_texts):
            new_text = new_text or " "
            final_old, final_new = _final_token(pipeline, old_text), _final_token(pipeline, new_text)
            farthest = max(final_old, final_new)
            old_emb, new_emb = _reference_embedding(pipeline, old_text), _reference_embedding(pipeline, new_text)
            old_emb = old_emb[final_old : len(old_emb) - max(0, farthest - final_old)]
            new_emb = new_emb[final_new : len(new_emb) - max(0, farthest - final_new)]
            values = new_emb @ w.T
            mat1 = mat1 + erase_scale * values.T @ old_emb
            mat2 = mat2 + erase_scale * old_emb.T @ old_emb
        for text in retain_texts:
            emb = _reference_embedding(pipeline, text)
            mat1 = mat1 + preserve_scale * (emb @ w.T).T @ emb
            mat2 = mat2 + preserve_scale * emb.T @ emb
        edited[name] = mat1 @ torch.inverse(mat2)
    return edited


def _projection_weights(pipeline) -> dict[str, torch.Tensor]:
    return {
        n: m.weight.detach().clone().double()
        for n, m in pipeline.unet.named_modules()
        if n.endswith(("attn2.to_k", "attn2.to_v"))
    }


def largest_difference(checkpoint, expected: dict[str, torch.Tensor]) -> float:
    """The largest relative difference (Frobenius norm) between erasectl's and the reference's weights."""
    found = 0.0
    for name, weight in expected.items():
        ours = checkpoint.tensors[f"unet.{name}.weight"].double()
        found = max(found, float((ours - weight).norm() / weight.norm()))
    return found


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_uce_paper_variant_is_the_paper_era_edit(tmp_path, family):
    from erasectl.models import load_pipeline

    assert uce_paper_difference(load_pipeline(str(tiny_pipeline(tmp_path / family, family)))) <= 1e-5


def uce_paper_difference(pipeline) -> float:
    """``--variant paper`` against a transcription of train_erase.py's ``edit_model``."""
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.profiles import PaperProfile

    weights = _projection_weights(pipeline)
    config = build_config("uce", PaperProfile(), {"variant": "paper"})
    request = ErasureRequest(["red circle", "ring"], PaperProfile(), anchor="blue striped square", preserve=["cross"])
    checkpoint = erase_concepts(pipeline, "uce", request, config)
    assert checkpoint.recipe["config"]["variant"] == "paper"
    guide = "blue striped square"
    expected = _train_erase_edit(
        pipeline, weights, ["red circle", "ring"], [guide, guide], ["", "cross"], 0.5, 1.0, config.preserve_scale
    )
    return largest_difference(checkpoint, expected)


def _regzero_embedding(pipeline, edited, originals, concept: str, regular_scale: float) -> torch.Tensor:
    """RECE's ``close_form_emb_regzero``: the bare concept prompt's 77 rows through
    (r I + sum W'^T W')^-1 sum W'^T W0, over keys and values."""
    first = next(iter(edited.values()))
    mat1 = torch.eye(first.shape[1], dtype=torch.float64) * regular_scale
    mat2 = torch.zeros(first.shape[1], first.shape[1], dtype=torch.float64)
    for name, w in edited.items():
        mat1 = mat1 + w.T @ w
        mat2 = mat2 + w.T @ originals[name]
    return _reference_embedding(pipeline, concept) @ (torch.inverse(mat1) @ mat2).T


def _edit_model_adversarial(pipeline, weights, adversarial, guides, retain_texts, lamb, erase_scale, preserve_scale):
    """RECE's ``edit_model_adversarial`` (technique ``replace``) on the current weights."""
    edited = {}
    for name, w in weights.items():
        mat1 = lamb * w
        mat2 = lamb * torch.eye(w.shape[1], dtype=torch.float64)
        for old_emb, new_emb in zip(adversarial, guides):
            mat1 = mat1 + erase_scale * (new_emb @ w.T).T @ old_emb
            mat2 = mat2 + erase_scale * old_emb.T @ old_emb
        for text in retain_texts:
            emb = _reference_embedding(pipeline, text)
            mat1 = mat1 + preserve_scale * (emb @ w.T).T @ emb
            mat2 = mat2 + preserve_scale * emb.T @ emb
        edited[name] = mat1 @ torch.inverse(mat2)
    return edited


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_rece_is_the_authors_train_object_py(tmp_path, family):
    """RECE's README: UCE's paper-era checkpoint, then ``--epochs`` rounds of close_form_emb_regzero
    and edit_model_adversarial (lamb 0.1, preserve_scale 0.1, the empty prompt always retained)."""
    from erasectl.models import load_pipeline

    assert rece_difference(load_pipeline(str(tiny_pipeline(tmp_path / family, family)))) <= 1e-5


def rece_difference(pipeline) -> float:
    """RECE's two rounds against a transcription of train_object.py's."""
    from erasectl.erasure import ErasureRequest, build_config, erase_concepts
    from erasectl.profiles import PaperProfile

    originals = _projection_weights(pipeline)
    config = build_config("rece", PaperProfile(), {"rounds": 2, "regular_scale": 0.1})
    assert (config.adversarial_solve, config.lamb, config.preserve_scale) == ("regzero", 0.1, 0.1)
    concepts, preserve = ["red circle", "ring"], ["cross"]
    checkpoint = erase_concepts(pipeline, "rece", ErasureRequest(concepts, PaperProfile(), preserve=preserve), config)

    weights = _train_erase_edit(pipeline, originals, concepts, ["", ""], [""] + preserve, 0.5, 1.0, 1.0)
    for _ in range(2):  # train_object.py's epochs
        adversarial = [_regzero_embedding(pipeline, weights, originals, c, 0.1) for c in concepts]
        guides = [_reference_embedding(pipeline, " ")] * len(concepts)
        weights = _edit_model_adversarial(pipeline, weights, adversarial, guides, [""] + preserve, 0.1, 1.0, 0.1)
    assert checkpoint.recipe["adversarial_rows"] == 2 * 2 * pipeline.tokenizer.model_max_length
    return largest_difference(checkpoint, weights)


def test_advunlearn_retain_term_is_their_reg_term(tmp_path):
    """AdvUnlearn's get_train_loss_retain (``--retain_train reg``): the retain prompts' x_t sampled
    under them by the pipeline to the iteration's step, the trained text encoder's prediction there
    pulled to the frozen one's by MSE, times --retain_loss_w (0.3 in their README's command)."""
    from erasectl.models import load_pipeline

    ours, reference = retain_terms(load_pipeline(str(tiny_pipeline(tmp_path / "sd1", "sd1", "PNDMScheduler"))))
    assert float(reference) > 0
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=0)


def retain_terms(pipeline) -> tuple[torch.Tensor, torch.Tensor]:
    """AdvUnlearn's retain term, erasectl's and a transcription of ``get_train_loss_retain``'s."""
    from erasectl.erasure import build_config
    from erasectl.methods.advunlearn import RetainTerm
    from erasectl.methods.esd import Shortcuts, _Training
    from erasectl.profiles import PaperProfile

    config = build_config("advunlearn", PaperProfile(), {"ddim_steps": 10})
    assert (config.preserve_weight, config.retain_batch, config.retain_states) == (0.3, 5, "own")
    prompts = [f"a photo of {o}" for o in ("chair", "fridge", "banana", "street sign", "cup", "ring", "bowl")]
    tokenizer = pipeline.tokenizer
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        frozen_embeddings = pipeline.text_encoder(ids)[0]  # their model_orig.get_learned_conditioning
        frozen_empty = pipeline.text_encoder(empty)[0]
    retain = RetainTerm(pipeline, prompts, config)
    generator = torch.Generator().manual_seed(0)
    training = _Training(
        pipeline, pipeline.unet, config, ["circle"], None, None, Shortcuts.for_mode("faithful"), generator, None, retain
    )
    with torch.no_grad():  # the trained encoder has moved from the frozen one
        for parameter in training.model.trained.values():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    stop, step = 4, 3
    state = generator.get_state()
    ours = retain.loss(training, step, torch.tensor([stop]))

    chosen = [prompts[i] for i in retain.chosen(step)]
    noise = torch.randn((len(chosen), *training.latent_shape), generator=torch.Generator().set_state(state))
    captured = {}

    def capture(pipe, index, timestep, tensors):
        if index == stop - 1:
            captured["latents"] = tensors["latents"].clone()
        return tensors

    index = [prompts.index(p) for p in chosen]
    pipeline(prompt_embeds=frozen_embeddings[index], negative_prompt_embeds=frozen_empty.expand(len(index), -1, -1),
             latents=noise.clone(), num_inference_steps=10, guidance_scale=config.start_guidance,
             output_type="latent", callback_on_step_end=capture)  # fmt: skip
    retain_z, t = captured["latents"], pipeline.scheduler.timesteps[stop]
    with torch.no_grad():
        retain_e_p = pipeline.unet(retain_z, t, encoder_hidden_states=frozen_embeddings[index]).sample
    # with gradients, as theirs (the trained prediction is what the step differentiates)
    retain_e_n = pipeline.unet(retain_z, t, encoder_hidden_states=pipeline.text_encoder(ids[index])[0]).sample
    reference = 0.3 * torch.nn.functional.mse_loss(retain_e_n, retain_e_p)
    # five prompts an iteration, none repeated within a pass of the set, as their PromptDataset
    assert len(chosen) == 5 and len(set(chosen)) == 5
    return ours.detach(), reference.detach()
