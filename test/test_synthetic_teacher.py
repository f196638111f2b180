"""The SyntheticTeacher: its text space, its dense features' shapes, and the accuracy its settings imply."""

import numpy as np
import pytest
import torch

from clip_seg3d_ros.synthetic import CLASS_NAMES, CameraConfig, LidarConfig, SyntheticWorld, WorldConfig, class_index
from clip_seg3d_ros.teacher.synthetic import SyntheticTeacher, SyntheticTeacherConfig

PATCH = 16
CLEAN = {"noise_std": 0.0, "confusions": ()}


@pytest.fixture(scope="module")
def frames():
    """Camera frames of three synthetic scenes (the LiDAR is not needed here: one beam)."""
    camera = CameraConfig(width=320, height=192)
    config = WorldConfig(seed=0, lidar=LidarConfig(beams=1, azimuth_steps=8), cameras=(camera,))
    world = SyntheticWorld(config)
    return [world.scene(index).cameras[0] for index in range(3)]


def patch_truth(label_image: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Majority class (-1: sky) and its area share in each cell of an (h, w) grid, flattened row-major."""
    height, width = label_image.shape
    h, w = grid
    cell = ((np.arange(height) * h) // height)[:, None] * w + ((np.arange(width) * w) // width)[None, :]
    bins = len(CLASS_NAMES) + 1
    counts = np.bincount((cell * bins + label_image + 1).ravel(), minlength=h * w * bins).reshape(h * w, bins)
    return counts.argmax(axis=1) - 1, counts.max(axis=1) / counts.sum(axis=1)


def predictions(features: torch.Tensor, text: torch.Tensor) -> np.ndarray:
    """Per-cell argmax of features (D, h, w) against text (C, D), flattened row-major."""
    return (text @ features.flatten(1)).argmax(dim=0).numpy()


def two_class_image(left: str, right: str, size: int = 512) -> np.ndarray:
    """A label image whose left half is one class and right half another, with a road strip at the bottom."""
    image = np.full((size, size), class_index(left), dtype=np.int64)
    image[:, size // 2 :] = class_index(right)
    image[-size // 8 :] = class_index("road")
    return image


def test_text_embeddings_are_seeded_unit_vectors_with_the_configured_similarities():
    teacher = SyntheticTeacher(SyntheticTeacherConfig(embed_dim=64, seed=3))
    text = teacher.encode_text(CLASS_NAMES)
    assert text.shape == (19, 64) and text.dtype == torch.float32
    torch.testing.assert_close(text.norm(dim=1), torch.ones(19))
    similarity = text @ text.T
    car, truck, road = class_index("car"), class_index("truck"), class_index("road")
    assert similarity[car, truck].item() == pytest.approx(0.9, abs=1e-5)  # a confusion pair
    assert similarity[car, road].item() == pytest.approx(0.8, abs=1e-5)  # unrelated classes
    def seeded(seed: int) -> torch.Tensor:
        return SyntheticTeacher(SyntheticTeacherConfig(embed_dim=64, seed=seed)).encode_text(CLASS_NAMES)

    torch.testing.assert_close(seeded(3), text)
    assert not torch.allclose(seeded(4), text)
    torch.testing.assert_close(teacher.encode_text(["truck", "car"]), text[[truck, car]])
    with pytest.raises(ValueError, match="traffic-sign"):
        teacher.encode_text(["car", "lamp post"])


def test_dense_features_have_the_patch_grid_unit_norm_and_are_deterministic(frames):
    teacher = SyntheticTeacher(SyntheticTeacherConfig(embed_dim=64, patch_size=PATCH))
    features = teacher.encode_frames(frames)
    assert [tuple(f.shape) for f in features] == [(64, 12, 20)] * 3  # 192 x 320 pixels / 16
    for f in features:
        assert f.dtype == torch.float32
        torch.testing.assert_close(f.norm(dim=0), torch.ones(12, 20))
    again = teacher.encode_label_images([frame.label_image for frame in frames])
    for first, second in zip(features, again, strict=True):
        torch.testing.assert_close(first, second, rtol=0, atol=0)
    odd = teacher.encode_label_images([np.zeros((100, 150), dtype=np.int32)])[0]
    assert odd.shape == (64, 6, 9)  # round(100 / 16), round(150 / 16)


def test_rgb_images_and_frames_without_labels_are_refused(frames):
    teacher = SyntheticTeacher(SyntheticTeacherConfig(embed_dim=64))
    with pytest.raises(ValueError, match="RGB"):
        teacher.encode_label_images([frames[0].image])
    unlabelled = type(frames[0])(camera=frames[0].camera, image=frames[0].image)
    with pytest.raises(ValueError, match="label_image"):
        teacher.encode_frames([unlabelled])
    with pytest.raises(ValueError, match="class ids"):
        teacher.encode_label_images([np.full((32, 32), len(CLASS_NAMES))])


def test_without_noise_or_confusion_every_pure_patch_gets_its_class(frames):
    # The default blur keeps more than half of a patch's own weight, so it cannot flip a pure patch.
    teacher = SyntheticTeacher(SyntheticTeacherConfig(**CLEAN))
    text = teacher.encode_text(CLASS_NAMES)
    pure_hits, pure_total, majority_hits, majority_total = 0, 0, 0, 0
    for frame, features in zip(frames, teacher.encode_frames(frames), strict=True):
        truth, share = patch_truth(frame.label_image, features.shape[1:])
        predicted = predictions(features, text)
        pure, labelled = (share == 1.0) & (truth >= 0), truth >= 0
        pure_hits += (predicted[pure] == truth[pure]).sum()
        pure_total += pure.sum()
        majority_hits += (predicted[labelled] == truth[labelled]).sum()
        majority_total += labelled.sum()
    assert pure_total > 300
    assert pure_hits == pure_total
    assert majority_hits / majority_total > 0.95  # mixed patches: the soft area-weighting mostly favours the majority


@pytest.mark.parametrize("probability", [0.0, 0.2, 0.5])
def test_a_confusion_probability_p_leaves_about_1_minus_p_of_the_pair_right(probability):
    # Independent patches (block 1) without blur: each car or truck patch flips to its partner with probability p.
    config = SyntheticTeacherConfig(embed_dim=64, patch_size=PATCH, noise_std=0.0, blur_sigma=0.0, confusion_block=1,
                                    confusions=(("car", "truck", probability),))
    teacher = SyntheticTeacher(config)
    image = two_class_image("car", "truck")
    features = teacher.encode_label_images([image])[0]
    truth, _ = patch_truth(image, features.shape[1:])
    predicted = predictions(features, teacher.encode_text(CLASS_NAMES))
    pair = np.isin(truth, [class_index("car"), class_index("truck")])
    accuracy = (predicted[pair] == truth[pair]).mean()
    # 896 patches: the binomial standard deviation is at most 0.017, the tolerance three of them.
    assert pair.sum() == 896
    assert abs(accuracy - (1 - probability)) < 0.05
    wrong = pair & (predicted != truth)
    partner = np.where(truth == class_index("car"), class_index("truck"), class_index("car"))
    np.testing.assert_array_equal(predicted[wrong], partner[wrong])  # errors go to the partner only
    road = truth == class_index("road")
    assert (predicted[road] == truth[road]).all()  # other classes are not confused


def test_default_blur_and_confusion_blocks_keep_the_expected_accuracy_on_a_pair():
    # Blocks of 4 x 4 patches share one decision (about one object), and the blur keeps the argmax inside a block;
    # the default noise in the default 512 dimensions rarely flips an argmax.
    config = SyntheticTeacherConfig(confusions=(("car", "truck", 0.2),))
    teacher = SyntheticTeacher(config)
    image = two_class_image("car", "truck", size=1024)
    features = teacher.encode_label_images([image])[0]
    truth, _ = patch_truth(image, features.shape[1:])
    predicted = predictions(features, teacher.encode_text(CLASS_NAMES))
    pair = np.isin(truth, [class_index("car"), class_index("truck")])
    # 224 blocks: the binomial standard deviation is 0.027; the blur pulls the edge patches of a confused block
    # back towards their unconfused neighbours, so the accuracy comes out a few points above 0.8. Tolerance 0.1.
    assert abs((predicted[pair] == truth[pair]).mean() - 0.8) < 0.1


@pytest.mark.parametrize("noise_std", [0.5, 2.0])
def test_noise_sets_the_cosine_to_the_true_class_text(noise_std):
    # A unit signal plus noise of expected norm s, nearly orthogonal to it in 512 dimensions: cosine 1/sqrt(1+s^2).
    teacher = SyntheticTeacher(SyntheticTeacherConfig(noise_std=noise_std, confusions=(), blur_sigma=0.0))
    image = two_class_image("vegetation", "building")
    features = teacher.encode_label_images([image])[0]
    truth, _ = patch_truth(image, features.shape[1:])
    text = teacher.encode_text(CLASS_NAMES)
    cosine = (text[truth] * features.flatten(1).T).sum(dim=1)
    assert cosine.mean().item() == pytest.approx(1 / np.sqrt(1 + noise_std**2), abs=0.02)
    assert (predictions(features, text) == truth).mean() > 0.99  # in 512 dimensions noise rarely flips the argmax
