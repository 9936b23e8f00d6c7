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
