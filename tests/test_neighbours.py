"""Neighbours from the tokenizer's whole words: batched, padded to the longest word, cached per
text encoder, and the same as encoding every phrase alone at full length."""

import torch

from erasectl.neighbours import encoder_fingerprint, find_neighbours, tokenizer_words, vocabulary_table


def _alone(pipeline, phrase):
    tokenizer = pipeline.tokenizer
    ids = tokenizer(
        [phrase], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return torch.nn.functional.normalize(pipeline.text_encoder(ids).pooler_output.float(), dim=-1)[0]


def test_vocabulary_table_is_cached_per_encoder_and_equals_unbatched_encoding(embedded_pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("ERASECTL_CACHE", str(tmp_path / "cache"))
    words, table = vocabulary_table(embedded_pipeline)
    assert words == tokenizer_words(embedded_pipeline.tokenizer) and len(words) == len(table)
    files = sorted(p.name for p in (tmp_path / "cache" / "neighbours").iterdir())
    assert files == [
        f"{encoder_fingerprint(embedded_pipeline)}.json",
        f"{encoder_fingerprint(embedded_pipeline)}.safetensors",
    ]
    again_words, again = vocabulary_table(embedded_pipeline)
    assert again_words == words and torch.equal(again, table)
    unbatched = torch.stack([_alone(embedded_pipeline, w) for w in words])
    torch.testing.assert_close(table, unbatched, rtol=0, atol=1e-5)
    for concept in ("circle", "red square", "striped"):
        keep = [i for i, w in enumerate(words) if w not in concept.split()]
        order = (unbatched[keep] - _alone(embedded_pipeline, concept)).norm(dim=1).argsort(stable=True)
        assert find_neighbours(embedded_pipeline, concept, 4) == [words[keep[i]] for i in order[:4].tolist()]


def test_the_fingerprint_follows_the_weights(embedded_pipeline):
    before = encoder_fingerprint(embedded_pipeline)
    weight = embedded_pipeline.text_encoder.get_input_embeddings().weight
    kept = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] += 1.0
        try:
            assert encoder_fingerprint(embedded_pipeline) != before
        finally:
            weight[0, 0] = kept
    assert encoder_fingerprint(embedded_pipeline) == before
