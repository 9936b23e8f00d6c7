"""One fixed measurement of an erasure: the erased concept, its surroundings and its paraphrases.

Every model (the base and each erased checkpoint) draws the same prompts with the same seeds. A
CLIP judge classifies each image zero-shot among the erased concept, the surrounding concepts and
the anchor; accuracy is the share of a prompt set's images judged as what its prompts name.

- ``protocol``: what is measured (prompt sets, seeds, sampler);
- ``judging``: each image judged, and each prompt set summarised;
- ``drift``: how far erased images moved from the base's of the same seed;
- ``tables``: the tables of ``metrics.json``;
- ``attacks``: the text attacks run inside evaluate;
- ``gates``: the CI gates;
- ``run``: drawing and judging every model; ``nudity``: the NudeNet judge;
- ``session``: a whole evaluate run, from checkpoints to files;
- ``report``: ``metrics.json``, ``per_image.csv``, ``report.md``, ``report.html``.
"""
