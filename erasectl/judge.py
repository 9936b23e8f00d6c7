"""CLIP as a judge: zero-shot classification and CLIP score, for the world judge and real CLIPs alike."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from erasectl.assets import EMBEDDED_JUDGE_NAME, embedded_judge_dir
from erasectl.errors import UserError
from erasectl.provenance import quiet_libraries


def projected(output) -> torch.Tensor:
    """The projected embedding from ``get_image_features``/``get_text_features``.

    transformers 4 returns the tensor; transformers 5 returns an output whose ``pooler_output``
    holds it.
    """
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def image_embeddings(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return F.normalize(projected(model.get_image_features(pixel_values=pixel_values)), dim=-1)


def text_embeddings(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    return F.normalize(projected(model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)), dim=-1)


class ClipJudge:
    """A transformers ``CLIPModel`` with its processor, used the way one would use
    ``openai/clip-vit-large-patch14``: zero-shot classification and CLIP score.
    """

    def __init__(self, model, processor, name: str, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.processor = processor
        self.name = name
        self.device = device

    @classmethod
    def load(cls, source: str | None = None, device: str = "cpu") -> ClipJudge:
        from pathlib import Path

        from transformers import CLIPModel, CLIPProcessor

        quiet_libraries()
        if source in (None, "", "embedded", EMBEDDED_JUDGE_NAME):
            name, location = EMBEDDED_JUDGE_NAME, embedded_judge_dir()
        else:
            name, location = source, source
            if Path(source).expanduser().exists():
                location = Path(source).expanduser()
                if not (location / "config.json").exists():
                    raise UserError(
                        f"{location} is not a CLIP model folder (no config.json); pass a CLIPModel folder or id"
                    )
        try:
            model = CLIPModel.from_pretrained(location)
            processor = CLIPProcessor.from_pretrained(location)
        except OSError as error:
            raise UserError(f"cannot load the judge {name}: {error}") from None
        return cls(model, processor, name, device)

    def identity(self) -> dict:
        """What makes two runs' judgements comparable: the judge's name and the hash of its weights."""
        from erasectl.provenance import weights_sha256

        return {"kind": "clip", "name": self.name, "weights_sha256": weights_sha256({"judge": self.model})}

    @torch.inference_mode()
    def embed_images(self, images: list, batch_size: int = 256) -> torch.Tensor:
        chunks = []
        for start in range(0, len(images), batch_size):
            pixels = self.processor(images=images[start : start + batch_size], return_tensors="pt").pixel_values
            chunks.append(image_embeddings(self.model, pixels.to(self.device)))
        return torch.cat(chunks) if chunks else torch.zeros(0)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        inputs = self.processor(text=texts, padding=True, truncation=True, return_tensors="pt")
        return text_embeddings(self.model, inputs.input_ids.to(self.device), inputs.attention_mask.to(self.device))

    def classify(self, image_embeds: torch.Tensor, candidates: list[str]) -> torch.Tensor:
        """Zero-shot: the index of the best-matching candidate text for each image."""
        return (image_embeds @ self.embed_texts(candidates).T).argmax(dim=1)

    def clip_score(self, image_embeds: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """CLIPScore as Hessel et al. (2021) define it: ``100 * max(cos(image, text), 0)`` per pair."""
        unique = sorted(set(prompts))
        table = self.embed_texts(unique)
        texts = table[[unique.index(p) for p in prompts]]
        return 100 * (image_embeds * texts).sum(dim=1).clamp(min=0)
