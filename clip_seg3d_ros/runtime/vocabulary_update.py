"""Changing the classes of a running segmenter: from a list of names to a :class:`Vocabulary`.

The node's ``vocabulary`` parameter (and rosbag replay's option) is a list of class names. Three cases:

- empty: the checkpoint's full vocabulary;
- every name in the checkpoint: that subset, in the given order, with the checkpoint's own text embeddings
  and seen flags (exactly what the network was trained against);
- some new names: those need CLIP's text encoder, with the prompt templates the checkpoint's embeddings
  were made with, so that old and new rows are comparable. The new classes count as unseen (no 3D label
  of theirs was ever trained on), so the calibration bias treats them like the other zero-shot classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from clip_seg3d_ros.vocabulary import Vocabulary


class TextEncoder(Protocol):
    """What :func:`resolve_vocabulary` needs of a text encoder: a DenseTeacher's ``encode_text`` and dimension.

    ``OpenClipTeacher`` and ``SyntheticTeacher`` both qualify. An encoder that has ``templates`` (as
    ``OpenClipTeacher``) must use the checkpoint's prompt templates.
    """

    embed_dim: int

    def encode_text(self, class_names: Sequence[str]) -> torch.Tensor: ...


def clean_class_names(names: Sequence[str]) -> list[str]:
    """``names`` stripped of surrounding spaces; an empty or repeated name is a ValueError."""
    if isinstance(names, str):
        raise ValueError(f"class names must be a list of strings, got the string {names!r}")
    cleaned = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"class names must be strings, got {name!r}")
        cleaned.append(name.strip())
    if any(not name for name in cleaned):
        raise ValueError(f"class names must not be empty, got {list(names)}")
    repeated = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if repeated:
        raise ValueError(f"class names must be unique, {repeated} repeat")
    return cleaned


def resolve_vocabulary(
    checkpoint_vocabulary: Vocabulary, names: Sequence[str], text_encoder: TextEncoder | None = None
) -> Vocabulary:
    """The vocabulary for ``names`` (see the module docstring); a clear ValueError when it cannot be made."""
    names = clean_class_names(names)
    if not names:
        return checkpoint_vocabulary
    new_names = [name for name in names if name not in checkpoint_vocabulary.names]
    if not new_names:
        return checkpoint_vocabulary.subset(names)
    if text_encoder is None:
        raise ValueError(
            f"classes {new_names} are not in the checkpoint, and no CLIP text encoder is configured to embed "
            f"them; the checkpoint's classes are {checkpoint_vocabulary.names} (set clip_weights to embed new ones)"
        )
    if text_encoder.embed_dim != checkpoint_vocabulary.embed_dim:
        raise ValueError(
            f"the text encoder's embeddings have dimension {text_encoder.embed_dim}, the checkpoint's "
            f"{checkpoint_vocabulary.embed_dim}: it is not the CLIP model the network was distilled from"
        )
    templates = getattr(text_encoder, "templates", None)
    if templates is not None and checkpoint_vocabulary.prompt_templates and (
        list(templates) != list(checkpoint_vocabulary.prompt_templates)
    ):
        raise ValueError(
            "the text encoder's prompt templates differ from the checkpoint's; new class embeddings would not be "
            f"comparable to the others. Build it with templates={checkpoint_vocabulary.prompt_templates}"
        )
    embedded = text_encoder.encode_text(new_names).float().cpu()
    if embedded.shape != (len(new_names), checkpoint_vocabulary.embed_dim):
        raise ValueError(f"the text encoder returned {tuple(embedded.shape)} for {len(new_names)} names")
    rows, seen = [], []
    for name in names:
        if name in checkpoint_vocabulary.names:
            index = checkpoint_vocabulary.names.index(name)
            rows.append(checkpoint_vocabulary.text_embeddings[index])
            seen.append(checkpoint_vocabulary.seen[index])
        else:
            rows.append(embedded[new_names.index(name)])
            seen.append(False)
    return Vocabulary(
        names=names,
        text_embeddings=torch.stack(rows),
        seen=seen,
        prompt_templates=list(checkpoint_vocabulary.prompt_templates),
    )
