"""Self-describing checkpoints, loaded with ``torch.load(weights_only=True)`` so that a file cannot run code.

A checkpoint is a plain dict of tensors, strings, numbers, lists and dicts:

    format            "clip_seg3d_ros.checkpoint"
    format_version    CHECKPOINT_VERSION
    model_config      ModelConfig.to_dict(): network widths, embedding dim, voxel size, input features
    model_state       the PointSegmentationNet state dict
    vocabulary        Vocabulary.to_dict(): class names, text embeddings, seen flags, prompt templates
    clip_model        the CLIP model that made the text embeddings (e.g. "ViT-B-16/openai"), "" if none
    train_config      the training configuration as a dict
    metrics           evaluation results as a dict
    training_state    optional, written by training for ``--resume``: optimiser and scheduler state, epoch;
                      ignored by everything that only runs the model

Loading checks every field's type, shape and range before anything uses it (a checkpoint that loads runs
on every sweep, or fails at load): one :class:`CheckpointError` names the file and the field, e.g.
``model.pt: field 'vocabulary.text_embeddings' must be a (C, D) tensor, got list``. A model config field
that is absent takes ModelConfig's default; a field this version does not know is an error.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from clip_seg3d_ros.models.minkunet import MINKUNET_PRESETS
from clip_seg3d_ros.models.network import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.vocabulary import Vocabulary

CHECKPOINT_FORMAT = "clip_seg3d_ros.checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED_FIELDS = ("model_config", "model_state", "vocabulary")
_OPTIONAL_FIELDS = ("clip_model", "train_config", "metrics", "training_state")
_VOCABULARY_FIELDS = ("names", "text_embeddings", "seen", "prompt_templates")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    model_config: ModelConfig
    model_state: dict[str, torch.Tensor]
    vocabulary: Vocabulary
    clip_model: str = ""
    train_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    training_state: dict | None = None

    def build_model(self) -> PointSegmentationNet:
        """The network with these weights (on the CPU, in eval mode)."""
        model = PointSegmentationNet(self.model_config)
        model.load_state_dict(self.model_state)
        return model.eval()


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically: a crash mid-write leaves the previous file intact, never a truncated one.

    The file gets the user's normal mode (0666 less the umask), like any file the user writes: a node running
    as another user must be able to read it, which mkstemp's 0600 would prevent.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_config": checkpoint.model_config.to_dict(),
        "model_state": {name: tensor.detach().cpu() for name, tensor in checkpoint.model_state.items()},
        "vocabulary": checkpoint.vocabulary.to_dict(),
        "clip_model": checkpoint.clip_model,
        "train_config": checkpoint.train_config,
        "metrics": checkpoint.metrics,
    }
    if checkpoint.training_state is not None:
        payload["training_state"] = checkpoint.training_state
    # O_EXCL: never another writer's temporary; mode 0o666: the kernel applies the umask, as for open().
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint and validate every field; every failure is a CheckpointError naming ``path``.

    The weights are checked against the model config by :func:`load_model`, which builds the network.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, zip errors, OSError...
        raise CheckpointError(f"{path}: {_unloadable_reason(path, error)}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a clip_seg3d_ros checkpoint (no '{CHECKPOINT_FORMAT}' format marker)")
    version = payload.get("format_version")
    if type(version) is not int or version > CHECKPOINT_VERSION or version < 1:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported (this clip_seg3d_ros reads "
            f"versions 1 to {CHECKPOINT_VERSION}; a newer file needs a newer clip_seg3d_ros)"
        )
    missing = [name for name in _REQUIRED_FIELDS if name not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {missing}")
    try:
        _check_known_keys("", payload, ("format", "format_version", *_REQUIRED_FIELDS, *_OPTIONAL_FIELDS))
        config = _model_config(payload["model_config"])
        model_state = _model_state(payload["model_state"])
        vocabulary = _vocabulary(payload["vocabulary"], config.embed_dim)
        clip_model, train_config, metrics, training_state = _extras(payload)
    except _SchemaError as error:
        raise CheckpointError(f"{path}: {error}") from None  # the message says it all; no chained traceback
    return Checkpoint(
        model_config=config,
        model_state=model_state,
        vocabulary=vocabulary,
        clip_model=clip_model,
        train_config=train_config,
        metrics=metrics,
        training_state=training_state,
    )


def load_model(path: str | os.PathLike) -> tuple[Checkpoint, PointSegmentationNet]:
    """:func:`load_checkpoint` plus the network built from it; weights that do not fit are a CheckpointError."""
    checkpoint = load_checkpoint(path)
    try:
        model = checkpoint.build_model()
    except (RuntimeError, TypeError, ValueError) as error:  # load_state_dict: missing/unexpected keys, wrong shapes
        detail = " ".join(str(error).split())  # PyTorch lists one problem a line: one line, the first ones
        detail = detail if len(detail) <= 400 else detail[:400] + " ..."
        raise CheckpointError(f"{path}: weights do not fit the model config: {detail}") from error
    return checkpoint, model


# -- why torch.load refused a file ------------------------------------------------------------------------------------

_UNSUPPORTED_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL ([\w.]+)", re.IGNORECASE)


def _unloadable_reason(path: Path, error: Exception) -> str:
    """What is wrong with a file torch.load(weights_only=True) refused, in words a user can act on.

    Never PyTorch's own first line ("Re-running torch.load with weights_only set to False will likely
    succeed"): that is wrong for a corrupt file and, for a file that holds code, exactly what must not be done.
    """
    unsupported = _UNSUPPORTED_GLOBAL.search(str(error))
    if unsupported:
        return (f"not loaded: the file holds Python objects a checkpoint may not contain (Unsupported global: "
                f"GLOBAL {unsupported.group(1)}); clip_seg3d_ros checkpoints never do, so this file was not "
                "written by clip_seg3d_ros or has been tampered with")
    try:
        with open(path, "rb") as handle:
            is_zip = handle.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    except OSError as unreadable:
        return f"cannot read the file: {unreadable.strerror or unreadable}"
    if not is_zip:
        return "not a checkpoint (not a PyTorch file, or corrupt)"
    detail = ""
    if isinstance(error, RuntimeError):  # a truncated file can also give OSError(EINVAL), which says nothing
        # PyTorch's zip reader: "PytorchStreamReader failed reading zip archive: failed finding central
        # directory. This is an internal miniz error. ..." - the first sentence is the useful part.
        detail = re.sub(r"^\[enforce fail[^\]]*\]\s*\.?\s*", "", str(error).strip()).split(". ")[0].strip()
    detail = f": {detail}" if detail else ""
    return f"truncated or corrupt checkpoint (a damaged PyTorch file{detail}); write or copy it again"


# -- the schema: one function per part, each raising _SchemaError naming the field ---------------------------------


class _SchemaError(ValueError):
    """A field of the payload with the wrong type, shape or value (becomes a CheckpointError naming the file)."""


def _invalid(name: str, requirement: str, value=None, *, got: str | None = None) -> _SchemaError:
    return _SchemaError(f"field '{name}' must be {requirement}, got {got or _describe(value)}")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {str(value.dtype).removeprefix('torch.')} and shape {tuple(value.shape)}"
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float)):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, str):
        return f"str {value[:60]!r}"
    return type(value).__name__


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not a width


def _check_known_keys(prefix: str, data: dict, known) -> None:
    """A key this version does not know is a misspelling or a newer format: refused, not silently ignored."""
    unknown = sorted(f"{prefix}{key}" for key in data if key not in known)
    if unknown:
        raise _SchemaError(f"unknown field(s) {unknown} (known: {[f'{prefix}{key}' for key in known]})")


def _require_dict(name: str, value) -> dict:
    if not isinstance(value, dict):
        raise _invalid(name, "a dict", value)
    return value


def _positive_finite(name: str, value) -> float:
    if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value) or value <= 0:
        raise _invalid(name, "a finite number > 0", value)
    return float(value)


def _positive_int(name: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise _invalid(name, "an integer >= 1", value)
    return value


def _model_config(data) -> ModelConfig:
    data = _require_dict("model_config", data)
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    _check_known_keys("model_config.", data, list(defaults))
    values = {**defaults, **data}  # an absent field takes ModelConfig's default, as it always has
    channels = values["channels"]
    if (not isinstance(channels, (list, tuple)) or len(channels) != 9
            or not all(_is_int(width) and width >= 1 for width in channels)):
        raise _invalid("model_config.channels", "a list of 9 integers >= 1 (stem, 4 encoder, 4 decoder)", channels)
    if not isinstance(values["preset"], str) or values["preset"] not in MINKUNET_PRESETS:
        raise _invalid("model_config.preset", f"one of {sorted(MINKUNET_PRESETS)}", values["preset"])
    if not isinstance(values["use_intensity"], bool):
        raise _invalid("model_config.use_intensity", "true or false", values["use_intensity"])
    return ModelConfig(
        channels=tuple(channels),
        blocks_per_stage=_positive_int("model_config.blocks_per_stage", values["blocks_per_stage"]),
        preset=values["preset"],
        embed_dim=_positive_int("model_config.embed_dim", values["embed_dim"]),
        voxel_size=_positive_finite("model_config.voxel_size", values["voxel_size"]),
        use_intensity=values["use_intensity"],
        intensity_scale=_positive_finite("model_config.intensity_scale", values["intensity_scale"]),
        temperature=_positive_finite("model_config.temperature", values["temperature"]),
    )


def _model_state(state) -> dict[str, torch.Tensor]:
    """Names -> tensors; floating-point weights finite (NaN weights would give NaN scores on every sweep).

    Whether the names and shapes fit the network is :func:`load_model`'s check (load_state_dict's message).
    """
    state = _require_dict("model_state", state)
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise _invalid("model_state", "a dict from parameter names to tensors", got=f"the key {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise _invalid(f"model_state.{name}", "a tensor", tensor)
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise _invalid(f"model_state.{name}", "finite (no NaN or inf)", got="NaN or inf values")
    return state


def _vocabulary(data, embed_dim: int) -> Vocabulary:
    data = _require_dict("vocabulary", data)
    _check_known_keys("vocabulary.", data, _VOCABULARY_FIELDS)
    names = data.get("names")
    if (not isinstance(names, (list, tuple)) or not names
            or not all(isinstance(name, str) and name.strip() for name in names)):
        raise _invalid("vocabulary.names", "a non-empty list of non-empty strings (the class names)", names)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise _invalid("vocabulary.names", "unique class names", got=f"duplicates {duplicates}")
    count = len(names)
    embeddings = data.get("text_embeddings")
    if not isinstance(embeddings, torch.Tensor) or not embeddings.is_floating_point() or embeddings.ndim != 2:
        raise _invalid("vocabulary.text_embeddings", "a (C, D) floating-point tensor", embeddings)
    if tuple(embeddings.shape) != (count, embed_dim):
        raise _invalid("vocabulary.text_embeddings",
                       f"a (C, D) = ({count}, {embed_dim}) tensor: a row per class name, D = model_config.embed_dim",
                       embeddings)
    if not torch.isfinite(embeddings).all():
        raise _invalid("vocabulary.text_embeddings", "finite (no NaN or inf)", got="NaN or inf values")
    if (embeddings.norm(dim=1) == 0).any():
        raise _invalid("vocabulary.text_embeddings", "non-zero in every row", got="an all-zero row")
    seen = data.get("seen", [True] * count)
    if not isinstance(seen, (list, tuple)) or len(seen) != count or not all(isinstance(f, bool) for f in seen):
        raise _invalid("vocabulary.seen", f"a list of {count} booleans (one per class name)", seen)
    templates = data.get("prompt_templates", [])
    if not isinstance(templates, (list, tuple)) or not all(isinstance(template, str) for template in templates):
        raise _invalid("vocabulary.prompt_templates", "a list of strings", templates)
    return Vocabulary(names=list(names), text_embeddings=embeddings, seen=list(seen), prompt_templates=list(templates))


def _extras(payload: dict) -> tuple[str, dict, dict, dict | None]:
    """clip_model, train_config, metrics and training_state (absent: "", {}, {}, None)."""
    clip_model = payload.get("clip_model", "")
    if not isinstance(clip_model, str):
        raise _invalid("clip_model", 'a string (e.g. "ViT-B-16/openai"; "" for none)', clip_model)
    train_config = _require_dict("train_config", payload.get("train_config", {}))
    metrics = _require_dict("metrics", payload.get("metrics", {}))
    training_state = payload.get("training_state")
    if training_state is not None:
        _require_dict("training_state", training_state)
    return clip_model, dict(train_config), dict(metrics), training_state
