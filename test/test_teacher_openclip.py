"""OpenClipTeacher on randomly initialised open_clip models (no CLIP weights can be downloaded in tests).

The MaskCLIP path and the template ensemble are checked against computations written out here from the
model's raw weights, so they test the formulas, not only shapes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from clip_seg3d_ros.geometry.camera import CameraModel
from clip_seg3d_ros.sample import CameraFrame
from clip_seg3d_ros.teacher import DRIVING_TEMPLATES, OpenClipTeacher, TeacherWeightsError
from clip_seg3d_ros.teacher.open_clip_teacher import interpolate_positional_embedding, resized_input_size

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# A short ensemble keeps the text tests quick: one prompt through CLIP's text tower is ~0.1 s on 2 CPU cores.
TEMPLATES = ("a photo of a {}.", "there is a {} in the scene.", "a {} seen from a car.")


def build_teacher(model_name: str = "ViT-B-16", seed: int = 0, **kwargs) -> OpenClipTeacher:
    """A seeded random model; its 1-D parameters (LayerNorm, biases) are perturbed away from their 1/0
    initialisation, so that a formula that forgets a bias or a LayerNorm affine fails."""
    torch.manual_seed(seed)
    teacher = OpenClipTeacher(model_name, pretrained=None, templates=TEMPLATES, **kwargs)
    with torch.no_grad():
        for parameter in teacher.model.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return teacher


@pytest.fixture(scope="module")
def teacher() -> OpenClipTeacher:
    return build_teacher()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def features(teacher, image) -> torch.Tensor:
    """The uncached teacher's dense features of ``image``."""
    return teacher.encode_images([image])[0]


def normalised_pixels(image: np.ndarray) -> torch.Tensor:
    mean, std = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)
    return ((torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std)[None]


def test_vit_dense_features_are_the_last_blocks_value_path(teacher, image, features):
    assert features.shape == (512, 14, 14) and features.dtype == torch.float32
    assert torch.allclose(features.norm(dim=0), torch.ones(14, 14), atol=1e-5)

    # The input of the last block, from open_clip's own forward pass (224x224: native positional embedding).
    visual = teacher.model.visual
    last = visual.transformer.resblocks[-1]
    captured = []
    handle = last.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    with torch.no_grad():
        visual(normalised_pixels(image))
    handle.remove()

    width = last.attn.embed_dim
    for row, column in [(0, 0), (3, 9), (13, 5)]:
        token = captured[0][0, 1 + row * 14 + column]  # token 0 is CLS; patches in row-major order
        normed = F.layer_norm(token, (width,), last.ln_1.weight, last.ln_1.bias, last.ln_1.eps)
        value = last.attn.in_proj_weight[2 * width :] @ normed + last.attn.in_proj_bias[2 * width :]
        attended = last.attn.out_proj.weight @ value + last.attn.out_proj.bias
        post = F.layer_norm(attended, (width,), visual.ln_post.weight, visual.ln_post.bias, visual.ln_post.eps)
        expected = post @ visual.proj
        assert torch.allclose(features[:, row, column], expected / expected.norm(), atol=1e-5), (row, column)


def test_wide_images_keep_their_aspect_on_an_interpolated_patch_grid(teacher):
    wide = np.random.default_rng(1).integers(0, 256, (112, 224, 3), dtype=np.uint8)
    (features,) = teacher.encode_images([wide])  # shorter side 112 -> 224, so 224 x 448
    assert features.shape == (512, 14, 28)
    assert torch.allclose(features.norm(dim=0), torch.ones(14, 28), atol=1e-5)

    assert resized_input_size(375, 1242, 224, (16, 16)) == (224, 736)  # KITTI: 46 x 14 patches
    assert resized_input_size(900, 1600, 224, (16, 16)) == (224, 400)  # nuScenes: 398.2 -> 25 patches
    assert resized_input_size(224, 224, 224, (16, 16)) == (224, 224)


def test_positional_embedding_interpolation():
    embedding = torch.randn(1 + 14 * 14, 8)
    assert interpolate_positional_embedding(embedding, (14, 14), (14, 14)) is embedding
    resized = interpolate_positional_embedding(embedding, (14, 14), (7, 21))
    assert resized.shape == (1 + 7 * 21, 8)
    assert torch.equal(resized[0], embedding[0])  # the CLS position is not spatial
    constant = torch.ones(1 + 14 * 14, 8) * torch.arange(8.0)
    assert torch.allclose(interpolate_positional_embedding(constant, (14, 14), (7, 21)), constant[0].expand(148, 8))


def test_resnet_dense_features_are_the_attention_pools_value_path(image):
    teacher = build_teacher("RN50")
    (features,) = teacher.encode_images([image])
    assert features.shape == (1024, 7, 7)
    assert torch.allclose(features.norm(dim=0), torch.ones(7, 7), atol=1e-5)

    visual = teacher.model.visual
    captured = []
    handle = visual.layer4.register_forward_hook(lambda module, args, output: captured.append(output))
    with torch.no_grad():
        visual(normalised_pixels(image))
    handle.remove()
    pool = visual.attnpool
    for row, column in [(0, 0), (2, 5), (6, 6)]:
        cell = captured[0][0, :, row, column]
        expected = pool.c_proj.weight @ (pool.v_proj.weight @ cell + pool.v_proj.bias) + pool.c_proj.bias
        assert torch.allclose(features[:, row, column], expected / expected.norm(), atol=1e-5), (row, column)


def test_text_embedding_is_the_normalised_mean_of_normalised_template_embeddings(teacher):
    text = teacher.encode_text(["car", "traffic-sign"])
    assert text.shape == (2, 512) and text.dtype == torch.float32
    assert torch.allclose(text.norm(dim=1), torch.ones(2), atol=1e-6)

    for row, prompt_name in enumerate(["car", "traffic sign"]):  # "traffic-sign" reads "traffic sign"
        tokens = teacher.tokenizer([template.format(prompt_name) for template in teacher.templates])
        with torch.no_grad():
            per_template = teacher.model.encode_text(tokens)
        per_template = per_template / per_template.norm(dim=1, keepdim=True)
        mean = per_template.mean(dim=0)
        assert torch.allclose(text[row], mean / mean.norm(), atol=1e-5), prompt_name
    assert not torch.allclose(text[0], text[1], atol=1e-3)


def test_default_templates_form_an_ensemble():
    assert len(DRIVING_TEMPLATES) >= 8 and len(set(DRIVING_TEMPLATES)) == len(DRIVING_TEMPLATES)
    assert all(template.count("{}") == 1 for template in DRIVING_TEMPLATES)
    with pytest.raises(ValueError, match="exactly one"):
        OpenClipTeacher(pretrained=None, templates=["a photo."])


def test_cache_serves_repeated_calls_from_disk(teacher, image, features, tmp_path, monkeypatch):
    cached = build_teacher(cache_dir=tmp_path)  # the same seed: the same weights as `teacher`
    first_features = cached.encode_images([image])[0]
    first_text = cached.encode_text(["car", "road"])
    assert len(list(tmp_path.rglob("*.pt"))) == 2

    def clip_must_not_run(*args, **kwargs):
        raise AssertionError("CLIP ran although the result was cached")

    monkeypatch.setattr(cached, "dense_features", clip_must_not_run)
    monkeypatch.setattr(cached, "_text_embeddings", clip_must_not_run)
    second_features = cached.encode_images([image])[0]
    second_text = cached.encode_text(["car", "road"])
    assert torch.equal(first_features, second_features) and torch.equal(first_text, second_text)
    assert second_features.dtype == torch.float32
    assert torch.allclose(second_features.norm(dim=0), torch.ones(14, 14), atol=1e-5)

    # fp16 on disk: equal to the uncached teacher's result within fp16 precision
    assert torch.allclose(second_features, features, atol=2e-3)
    assert torch.allclose(second_text, teacher.encode_text(["car", "road"]), atol=2e-3)
    with pytest.raises(AssertionError, match="CLIP ran"):  # a new image is not in the cache
        cached.encode_images([image[::-1].copy()])


def test_missing_weights_fail_fast_with_a_clear_error(tmp_path):
    start = time.perf_counter()
    with pytest.raises(TeacherWeightsError, match="no such file"):
        OpenClipTeacher(pretrained=str(tmp_path / "missing.safetensors"))
    with pytest.raises(TeacherWeightsError, match="not an open_clip tag") as unknown:
        OpenClipTeacher(pretrained="no-such-tag")
    assert "openai" in str(unknown.value)  # the model's known tags are listed
    with pytest.raises(TeacherWeightsError, match="huggingface-cli download timm/vit_base_patch16_clip_224.openai"):
        OpenClipTeacher(pretrained="openai", weights_cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 5.0

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(TeacherWeightsError, match="could not load CLIP weights"):
        OpenClipTeacher(pretrained=str(corrupt))


def test_local_weights_file_is_loaded(teacher, image, features, tmp_path):
    path = tmp_path / "clip.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in teacher.model.state_dict().items()}, str(path))
    loaded = OpenClipTeacher(pretrained=str(path))
    assert torch.equal(loaded.model.visual.proj, teacher.model.visual.proj)
    assert torch.allclose(loaded.encode_images([image])[0], features, atol=1e-6)


def test_frames_are_encoded_from_their_rgb_images(teacher, image, features):
    frame = CameraFrame(camera=CameraModel("front", np.eye(3), image.shape[1], image.shape[0]), image=image)
    (from_frame,) = teacher.encode_frames([frame])
    assert torch.equal(from_frame, features)
