"""CLIP as the dense 2D teacher, on open_clip: template-ensembled text embeddings and MaskCLIP dense features.

Dense features follow MaskCLIP (Zhou et al., "Extract Free Dense Labels from CLIP", ECCV 2022): CLIP's
image embedding comes from attention pooling, which mixes all positions; MaskCLIP instead keeps, at every
position, the *value* of the last attention layer, mapped by the layers that come after it.

- ViT: blocks 1..L-1 run unchanged (CLS token included); for block L, patch token x:
      f(x) = ln_post(out_proj(W_v ln_1(x) + b_v)) @ proj
  (W_v, b_v: the value rows of the attention's in_proj): block L's residual connection and MLP are
  DROPPED. MaskCLIP's own mmseg code keeps them: f = ln_post(y + mlp(ln_2(y))) @ proj with
  y = x + out_proj(W_v ln_1(x) + b_v). We take the value-only variant of the widely used MaskCLIP port
  (maskclip_onnx, whose authors found that adding x or the MLP degrades the result), in line with
  ClearCLIP (Lan et al., ECCV 2024): the last block's residual carries most of the noise of CLIP's dense
  predictions. Both variants share everything up to block L, so switching is a two-line change.
- ResNet (ModifiedResNet): at every position of the last stage, f(x) = c_proj(v_proj(x)), the attention
  pool's value and output projections without the attention (MaskCLIP's head; no positional embedding).

Images of any size: the shorter side is resized to ``resolution`` (224 by default, CLIP's training size) and
the longer one keeps the aspect ratio, both rounded to multiples of the patch size; the ViT's positional
embedding is interpolated (bicubic) to the resulting patch grid. A 1242x375 KITTI image becomes 736x224,
a 46x14 grid, instead of a squashed 14x14 one.

Weights are looked up offline only (unless ``allow_download``): a local file, or a tag of open_clip's
registry already in the Hugging Face cache. Anything else fails at once with :class:`TeacherWeightsError`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer
from open_clip.utils import to_2tuple
from torch import nn

from clip_seg3d_ros.sample import CameraFrame
from clip_seg3d_ros.teacher.cache import FeatureCache, cache_key

# CLIP-style prompts for driving scenes; the class embedding is the normalised mean over all of them.
DRIVING_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of many {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a low resolution photo of a {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "a photo of a {} in a street scene.",
    "a {} seen from a car.",
)

# Part of every image cache key: change it when the dense path changes, so stale features are not reused.
DENSE_METHOD = "maskclip-vit-value-no-residual/resnet-v-c-proj/v1"
TEXT_BATCH = 256  # prompts per text-encoder forward


class TeacherWeightsError(RuntimeError):
    """The requested CLIP weights are not on this machine (or could not be loaded)."""


def prompt_name(class_name: str) -> str:
    """How a class name reads in a prompt: "traffic-sign" -> "traffic sign", "other_vehicle" -> "other vehicle"."""
    return class_name.replace("-", " ").replace("_", " ").strip()


def resolve_weights(model_name: str, pretrained: str | None, weights_cache_dir: str | None = None) -> str | None:
    """The local checkpoint for ``pretrained`` (None: random init), found without any network access.

    ``pretrained`` is a file path, or a tag of open_clip's registry for ``model_name`` (e.g. "openai"),
    looked up in the Hugging Face cache (``weights_cache_dir``, default HF's own). open_clip's other source,
    OpenAI's TorchScript archives, cannot be read with ``weights_only=True`` and is not considered.
    """
    if pretrained is None:
        return None
    tag = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag:
        if Path(pretrained).is_file():
            return pretrained
        raise TeacherWeightsError(
            f"CLIP weights {pretrained!r} for {model_name}: no such file, and not an open_clip tag of this model "
            f"(its tags: {open_clip.list_pretrained_tags_by_model(model_name)}). Pass a local .safetensors/.pt "
            "state dict, a tag whose weights are in the Hugging Face cache, or None for random weights (tests)."
        )
    repo_id, filenames = _hub_files(tag)
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=weights_cache_dir)
        if isinstance(found, str):  # the other answers are None and a "known missing" sentinel
            return found
    where = weights_cache_dir or "the default Hugging Face cache"
    quick_gelu = tag.get("quick_gelu", False)
    raise TeacherWeightsError(
        f"CLIP weights {model_name} / {pretrained!r} are not on this machine: looked for {repo_id}/{filenames} "
        f"in {where}, and downloading is off. On a machine with internet run "
        f"`huggingface-cli download {repo_id} {filenames[0]}`, copy the file here and pass "
        f"pretrained='/path/to/{filenames[0]}', quick_gelu={quick_gelu}; or copy the Hugging Face cache here "
        "(weights_cache_dir); or set allow_download=True where the network is reachable."
    )


def _load_failure(error: Exception, limit: int = 300) -> str:
    """Why open_clip could not load a weights file, in one line of at most ``limit`` characters.

    Not PyTorch's weights_only refusal ("Re-running torch.load with weights_only set to False will likely
    succeed"): that advice is wrong for a corrupt file and unsafe for one that holds code. A state-dict
    mismatch lists every key over many lines: its start says enough.
    """
    message = " ".join(str(error).split())
    if message.startswith("Weights only load failed"):
        return "torch.load(weights_only=True) cannot read it: not a PyTorch state dict, corrupt, or it holds code"
    if not message:  # e.g. StopIteration from open_clip on an empty state dict
        return f"open_clip raised {type(error).__name__} (an empty or foreign state dict?)"
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _hub_files(tag: dict) -> tuple[str, list[str]]:
    """The Hugging Face repository of an open_clip tag and its candidate files, safetensors first."""
    repo_id, filename = os.path.split(tag.get("hf_hub", ""))
    if not filename:
        return repo_id, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    stem, suffix = os.path.splitext(filename)
    return repo_id, ([f"{stem}.safetensors"] if suffix in (".bin", ".pth") else []) + [filename]


def resized_input_size(height: int, width: int, resolution: int, stride: tuple[int, int]) -> tuple[int, int]:
    """Network input size for an image: shorter side ~ ``resolution``, aspect kept, multiples of ``stride``."""
    scale = resolution / min(height, width)
    return (
        max(stride[0], round(height * scale / stride[0]) * stride[0]),
        max(stride[1], round(width * scale / stride[1]) * stride[1]),
    )


def interpolate_positional_embedding(
    embedding: torch.Tensor, native_grid: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """(1 + gh*gw, width) ViT positional embedding resampled (bicubic) to ``grid``; the CLS row is kept."""
    if tuple(grid) == tuple(native_grid):
        return embedding
    cls_row, patches = embedding[:1], embedding[1:]
    patches = patches.reshape(1, *native_grid, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([cls_row, patches.flatten(2)[0].T], dim=0)


def vit_dense_features(visual: VisionTransformer, pixels: torch.Tensor) -> torch.Tensor:
    """MaskCLIP value path of an open_clip ViT: (B, 3, H, W) normalised pixels -> (B, D, H/p, W/p), not normalised."""
    batch = pixels.shape[0]
    tokens = visual.conv1(pixels)  # (B, width, gh, gw)
    grid = tuple(tokens.shape[2:])
    tokens = tokens.flatten(2).transpose(1, 2)
    cls_token = visual.class_embedding.to(tokens.dtype).expand(batch, 1, -1)
    position = interpolate_positional_embedding(visual.positional_embedding, visual.grid_size, grid)
    x = visual.ln_pre(torch.cat([cls_token, tokens], dim=1) + position.to(tokens.dtype))

    transformer = visual.transformer
    *blocks, last = transformer.resblocks
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    for block in blocks:
        x = block(x)
    if not transformer.batch_first:
        x = x.transpose(0, 1)

    attention: nn.MultiheadAttention = last.attn
    width = attention.embed_dim
    value_bias = None if attention.in_proj_bias is None else attention.in_proj_bias[2 * width :]
    value = F.linear(last.ln_1(x[:, 1:]), attention.in_proj_weight[2 * width :], value_bias)
    x = last.ls_1(attention.out_proj(value))  # ls_1 is the identity in CLIP; kept for LayerScale models
    features = visual.ln_post(x) @ visual.proj
    return features.reshape(batch, *grid, -1).permute(0, 3, 1, 2)


def resnet_dense_features(visual: ModifiedResNet, pixels: torch.Tensor) -> torch.Tensor:
    """MaskCLIP value path of a CLIP ResNet: (B, 3, H, W) -> (B, D, H/32, W/32) = c_proj(v_proj(x)), not normalised."""
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(pixels)))))
    pool = visual.attnpool
    features = pool.c_proj(pool.v_proj(x.permute(0, 2, 3, 1)))
    return features.permute(0, 3, 1, 2)


class OpenClipTeacher:
    """A :class:`~clip_seg3d_ros.teacher.base.DenseTeacher` on an open_clip CLIP model (frozen, eval mode).

    - ``pretrained``: open_clip tag (found offline, see :func:`resolve_weights`), path to a local state dict
      (.safetensors / .pt / .bin), or None for random weights (tests only).
    - ``quick_gelu``: None takes the tag's registry value; a file defaults to False, so pass True for
      OpenAI-trained weights (their MLPs use QuickGELU; the model name "ViT-B-16-quickgelu" is equivalent).
    - ``resolution``: the shorter image side at the network input (default: the model's, 224).
    - ``cache_dir``: where text embeddings and dense features are kept (fp16) across calls and runs. With a
      cache, results are always the fp16-rounded, re-normalised values, so a fresh and a cached result
      are identical.

    Outputs are float32 CPU tensors, computed under ``torch.no_grad`` (not ``inference_mode``: the features
    are targets of losses, and autograd refuses to save inference tensors for backward).
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: str | None = "openai",
        device: str | torch.device = "cpu",
        templates: Sequence[str] = DRIVING_TEMPLATES,
        resolution: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        quick_gelu: bool | None = None,
        weights_cache_dir: str | None = None,
        allow_download: bool = False,
        batch_size: int = 8,
    ) -> None:
        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model_name!r}; known: {open_clip.list_models()}")
        self.templates = list(templates)
        bad = [template for template in self.templates if template.count("{}") != 1]
        if not self.templates or bad:
            raise ValueError(f"every prompt template needs exactly one '{{}}' for the class name; got {bad or 'none'}")
        tag = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
        self.quick_gelu = bool(tag.get("quick_gelu", False)) if quick_gelu is None else quick_gelu
        # with allow_download, open_clip resolves (and downloads) a tag itself
        source = pretrained if allow_download and tag else resolve_weights(model_name, pretrained, weights_cache_dir)
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=source,
                device=device,
                force_quick_gelu=self.quick_gelu,
                cache_dir=weights_cache_dir,
                require_pretrained=source is not None,
                weights_only=True,
            )
        except Exception as error:  # safetensors, unpickling, state-dict and download errors alike
            if source is None:
                raise
            raise TeacherWeightsError(
                f"could not load CLIP weights {pretrained!r} into {model_name}: {_load_failure(error)}"
            ) from error
        self.model = model.eval().requires_grad_(False)
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = torch.device(device)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.batch_size = batch_size

        visual = self.model.visual
        if isinstance(visual, VisionTransformer):
            unsupported = visual.attn_pool is not None or not all(
                isinstance(block.attn, nn.MultiheadAttention) for block in visual.transformer.resblocks
            )
            self.stride = tuple(visual.patch_size)
        elif isinstance(visual, ModifiedResNet):
            unsupported, self.stride = False, (32, 32)
        else:
            unsupported = True
        if unsupported:
            raise ValueError(
                f"{model_name}: MaskCLIP dense features are implemented for open_clip's VisionTransformer "
                f"(standard attention, no attentional pooler) and ModifiedResNet, not this {type(visual).__name__}"
            )
        self.embed_dim: int = visual.output_dim
        model_preprocess = open_clip.get_model_preprocess_cfg(self.model)
        self.resolution = resolution or min(to_2tuple(model_preprocess["size"]))
        # the tag's normalisation wins: it is what those weights were trained with
        self.mean = torch.tensor(tag.get("mean", model_preprocess["mean"]), device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(tag.get("std", model_preprocess["std"]), device=self.device).view(1, 3, 1, 1)
        self.cache = FeatureCache(cache_dir) if cache_dir is not None else None

    @cached_property
    def weights_key(self) -> str:
        """Identifies what the model computes: name, activation and a SHA-256 of every weight.

        Hashing the weights themselves (once per model) keeps different checkpoints, and
        different random initialisations, from ever sharing cache entries.
        """
        digest = hashlib.sha256()
        for name, tensor in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return cache_key(self.model_name, f"quick_gelu={self.quick_gelu}", digest.hexdigest())

    def encode_text(self, class_names: Sequence[str]) -> torch.Tensor:
        """(C, D) float32 unit rows: t_c = normalize(mean_k normalize(E_text(template_k(name_c))))."""
        names = list(class_names)
        if not names:
            raise ValueError("encode_text needs at least one class name")
        if self.cache is None:
            return self._text_embeddings(names)
        key = cache_key("text", self.weights_key, str(len(self.templates)), *self.templates, *names)
        stored = self.cache.load(key)
        if stored is None:
            stored = self.cache.save(key, self._text_embeddings(names))
        return F.normalize(stored.float(), dim=1)

    def encode_frames(self, frames: Sequence[CameraFrame]) -> list[torch.Tensor]:
        """The DenseTeacher call: :meth:`encode_images` of the frames' RGB images."""
        return self.encode_images([frame.image for frame in frames])

    def encode_images(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """One (D, h, w) float32 tensor per (H, W, 3) uint8 RGB image, unit-norm along D (MaskCLIP features).

        (h, w) = network input size / patch size (see :func:`resized_input_size`); cell (i, j) covers rows
        [i H/h, (i+1) H/h) and columns [j W/w, (j+1) W/w) of the original image. Images of the same input
        size run in batches of ``batch_size``; cached images do not run at all.
        """
        results: list[torch.Tensor | None] = [None] * len(images)
        keys: list[str | None] = [None] * len(images)
        pending: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"image {index}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
            if self.cache is not None:
                keys[index] = self._image_key(image)
                stored = self.cache.load(keys[index])
                if stored is not None:
                    results[index] = F.normalize(stored.float(), dim=0)
                    continue
            pending.setdefault(self.input_size(*image.shape[:2]), []).append(index)

        for size, indices in pending.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                pixels = torch.cat([self.preprocess(images[index], size) for index in chunk])
                for index, features in zip(chunk, self.dense_features(pixels).cpu(), strict=True):
                    if self.cache is not None:
                        features = F.normalize(self.cache.save(keys[index], features).float(), dim=0)
                    results[index] = features
        return results

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size of an image of ``height`` x ``width`` pixels."""
        return resized_input_size(height, width, self.resolution, self.stride)

    def preprocess(self, image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, size) float: bicubic antialiased resize (as CLIP's PIL pipeline), mean/std."""
        image = np.ascontiguousarray(image)
        if not image.flags.writeable:  # e.g. a decoded or memory-mapped image: torch wants to own writable memory
            image = image.copy()
        pixels = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float() / 255
        if tuple(pixels.shape[2:]) != tuple(size):
            pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
            pixels = pixels.clamp(0, 1)  # bicubic overshoots; PIL's uint8 output cannot
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed pixels -> (B, D, H/stride, W/stride), unit-norm along D."""
        visual = self.model.visual
        if isinstance(visual, VisionTransformer):
            features = vit_dense_features(visual, pixels)
        else:
            features = resnet_dense_features(visual, pixels)
        return F.normalize(features.float(), dim=1)

    @torch.no_grad()
    def _text_embeddings(self, names: list[str]) -> torch.Tensor:
        prompts = [template.format(prompt_name(name)) for name in names for template in self.templates]
        tokens = self.tokenizer(prompts).to(self.device)
        embeddings = torch.cat([self.model.encode_text(chunk) for chunk in tokens.split(TEXT_BATCH)])
        per_template = F.normalize(embeddings.float(), dim=-1).reshape(len(names), len(self.templates), -1)
        return F.normalize(per_template.mean(dim=1), dim=-1).cpu()

    def _image_key(self, image: np.ndarray) -> str:
        settings = f"{DENSE_METHOD}|{self.resolution}|{self.mean.flatten().tolist()}|{self.std.flatten().tolist()}"
        return cache_key("image", self.weights_key, settings, str(image.shape), np.ascontiguousarray(image).tobytes())
