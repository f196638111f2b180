"""The classes a model segments: names, their CLIP text embeddings and which were seen in training."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Vocabulary:
    """``text_embeddings`` (C, D) holds one vector per class (unit length from CLIP), row ``i`` for ``names[i]``.

    ``seen[i]`` says whether class ``i`` had 3D ground truth in training (zero-shot setting); the
    calibration bias of the classifier lowers exactly these classes. ``prompt_templates`` records how the
    embeddings were made (e.g. "a photo of a {}."), so that new names can be embedded the same way.
    """

    names: list[str]
    text_embeddings: torch.Tensor
    seen: list[bool] = field(default_factory=list)
    prompt_templates: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = [str(name) for name in self.names]
        if not self.seen:
            self.seen = [True] * len(self.names)
        self.seen = [bool(flag) for flag in self.seen]
        embeddings = self.text_embeddings
        if embeddings.ndim != 2 or embeddings.shape[0] != len(self.names):
            raise ValueError(f"text_embeddings must be (C={len(self.names)}, D), got {tuple(embeddings.shape)}")
        if len(self.seen) != len(self.names):
            raise ValueError(f"{len(self.seen)} seen flags for {len(self.names)} classes")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"class names must be unique: {self.names}")
        if not torch.isfinite(embeddings).all():
            raise ValueError("text_embeddings contain NaN or inf")
        if (embeddings.norm(dim=1) == 0).any():
            raise ValueError("a text embedding is all zeros")
        self.text_embeddings = embeddings.detach().float().cpu()  # the classifier normalises them

    @property
    def embed_dim(self) -> int:
        return self.text_embeddings.shape[1]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, names: list[str]) -> Vocabulary:
        """The classes ``names`` of this vocabulary, in that order; an unknown name is a ValueError."""
        unknown = [name for name in names if name not in self.names]
        if unknown:
            raise ValueError(f"unknown class names {unknown}; this vocabulary has {self.names}")
        rows = [self.names.index(name) for name in names]
        return Vocabulary(
            names=list(names),
            text_embeddings=self.text_embeddings[rows],
            seen=[self.seen[row] for row in rows],
            prompt_templates=list(self.prompt_templates),
        )

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "text_embeddings": self.text_embeddings.clone(),
            "seen": list(self.seen),
            "prompt_templates": list(self.prompt_templates),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        return cls(
            names=list(data["names"]),
            text_embeddings=data["text_embeddings"],
            seen=list(data.get("seen", [])),
            prompt_templates=list(data.get("prompt_templates", [])),
        )
