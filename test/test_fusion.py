"""Camera fusion on the synthetic world: the 2D teacher's probabilities mixed into the 3D network's."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clip_seg3d_ros import Segmenter, Vocabulary
from clip_seg3d_ros.geometry import CameraModel, project_points
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.runtime.fusion import CameraFusion, fuse_probabilities
from clip_seg3d_ros.runtime.runtime import SegmentRuntime
from clip_seg3d_ros.sample import CameraFrame
from clip_seg3d_ros.synthetic import CLASS_NAMES, LidarConfig, SyntheticWorld, WorldConfig
from clip_seg3d_ros.teacher import (
    SyntheticTeacher,
    SyntheticTeacherConfig,
    dense_pseudo_labels,
    pseudo_labels_to_points,
)

CLEAN = {"noise_std": 0.0, "confusions": (), "blur_sigma": 0.0}


@pytest.fixture(scope="module")
def scene():
    return SyntheticWorld(WorldConfig(lidar=LidarConfig(azimuth_steps=128))).scene(0)


@pytest.fixture(scope="module")
def teacher():
    return SyntheticTeacher(SyntheticTeacherConfig(embed_dim=64, **CLEAN))


@pytest.fixture(scope="module")
def segmenter(teacher):
    """A random 3D network whose vocabulary is the teacher's own text embeddings (as a checkpoint's would be)."""
    torch.manual_seed(0)
    config = ModelConfig.from_preset("small", embed_dim=64, voxel_size=0.1)
    vocabulary = Vocabulary(list(CLASS_NAMES), teacher.encode_text(CLASS_NAMES))
    return Segmenter(PointSegmentationNet(config).eval(), vocabulary)


@pytest.fixture(scope="module")
def results(scene, teacher, segmenter):
    """Labels and scores without fusion and with fusion weights 0, 0.5 and 1, and the points the camera sees."""
    out = {"3d": SegmentRuntime(segmenter).process(scene.points, scene.cameras)}
    for weight in (0.0, 0.5, 1.0):
        fusion = CameraFusion(teacher, segmenter.vocabulary, weight=weight)
        out[weight] = SegmentRuntime(segmenter, fusion=fusion).process(scene.points, scene.cameras)
    seen, probabilities_2d = CameraFusion(teacher, segmenter.vocabulary).image_probabilities(
        scene.points[:, :3], scene.cameras
    )
    out["seen"], out["p2d"] = seen, probabilities_2d
    return out


def test_weight_one_gives_the_2d_teachers_labels_on_camera_points(scene, teacher, results):
    seen, fused = results["seen"], results[1.0]
    assert 0.1 * len(scene.points) < len(seen) < 0.9 * len(scene.points)
    np.testing.assert_array_equal(fused.labels[seen], results["p2d"].argmax(dim=1).numpy())
    # The same labels as the teacher's own dense argmax, transferred to points independently.
    text = teacher.encode_text(CLASS_NAMES)
    (features,) = teacher.encode_frames(scene.cameras)
    label_map, _ = dense_pseudo_labels(features, text, None, temperature=0.01, prompt_score_threshold=0.0,
                                       confidence_threshold=0.0)
    frame = scene.cameras[0]
    reference = pseudo_labels_to_points([label_map.numpy()], [frame.image.shape[:2]],
                                        [project_points(scene.points[:, :3], frame.camera)], len(scene.points))
    np.testing.assert_array_equal(fused.labels[seen], reference[seen])
    # The 3D network alone disagrees with the teacher on most of those points (it is random).
    assert (results["3d"].labels[seen] != fused.labels[seen]).mean() > 0.5


def test_weight_zero_is_no_fusion_and_points_outside_the_cameras_are_unchanged(scene, results):
    np.testing.assert_array_equal(results[0.0].labels, results["3d"].labels)
    np.testing.assert_array_equal(results[0.0].scores, results["3d"].scores)
    outside = np.setdiff1d(np.arange(len(scene.points)), results["seen"])
    for weight in (0.5, 1.0):
        np.testing.assert_array_equal(results[weight].labels[outside], results["3d"].labels[outside])
        np.testing.assert_array_equal(results[weight].scores[outside], results["3d"].scores[outside])
    assert results[0.5].timings_ms["fusion"] > 0


def test_fusion_with_a_clean_teacher_raises_accuracy_on_camera_points(scene, results):
    seen = results["seen"]
    truth = scene.labels[seen]
    labelled = truth >= 0

    def accuracy(result):
        return (result.labels[seen][labelled] == truth[labelled]).mean()

    assert accuracy(results[0.5]) > accuracy(results["3d"]) + 0.3
    assert accuracy(results[0.5]) > 0.7


class ConstantTeacher:
    """A stub DenseTeacher: frame i's features are text embedding ``rows[i]`` in every cell; counts its calls."""

    def __init__(self, text: torch.Tensor, rows: list[int]) -> None:
        self.text, self.rows, self.embed_dim, self.encoded = text, rows, text.shape[1], []

    def encode_frames(self, frames):
        self.encoded.append([frame.camera.name for frame in frames])
        names = [frame.camera.name for frame in frames]
        return [self.text[self.rows[int(name[-1])]][:, None, None].expand(-1, 3, 4).clone() for name in names]


def frame(name: str, lidar_to_camera: np.ndarray) -> CameraFrame:
    camera = CameraModel(name=name, K=[[10, 0, 20], [0, 10, 15], [0, 0, 1]], width=40, height=30,
                         lidar_to_camera=lidar_to_camera)
    return CameraFrame(camera=camera, image=np.zeros((30, 40, 3), dtype=np.uint8))


def test_points_seen_by_several_cameras_average_their_2d_probabilities():
    text = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    vocabulary = Vocabulary(["a", "b", "c"], text)
    teacher = ConstantTeacher(text, rows=[0, 1, 2])
    looking_back = np.diag([-1.0, 1.0, -1.0, 1.0])  # rotated 180 degrees about y: sees z < 0
    frames = [frame("cam0", np.eye(4)), frame("cam1", np.eye(4)), frame("cam2", looking_back)]
    xyz = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, -5.0], [100.0, 0.0, 1.0], [np.nan, 0.0, 5.0]])
    fusion = CameraFusion(teacher, vocabulary, temperature=0.5)
    seen, probabilities = fusion.image_probabilities(xyz, frames)
    assert seen.tolist() == [0, 1]
    each = torch.softmax(text @ text.T / 0.5, dim=1)  # row i: the probabilities of a cell with feature text[i]
    torch.testing.assert_close(probabilities[0], (each[0] + each[1]) / 2)
    torch.testing.assert_close(probabilities[1], each[2])
    # A camera that sees no point is not encoded.
    fusion.image_probabilities(xyz[1:2], frames)
    assert teacher.encoded[-1] == ["cam2"]
    assert fusion.image_probabilities(xyz[2:], frames)[0].size == 0


def test_fuse_probabilities_and_the_checks():
    p3d, p2d = torch.tensor([[0.6, 0.4]]), torch.tensor([[0.2, 0.8]])
    torch.testing.assert_close(fuse_probabilities(p3d, p2d, 0.25), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(fuse_probabilities(p3d, p2d, 1.0), p2d)
    with pytest.raises(ValueError):
        fuse_probabilities(p3d, p2d[:, :1], 0.5)
    teacher = SimpleNamespace(embed_dim=8)
    vocabulary = Vocabulary(["a"], torch.ones(1, 8))
    with pytest.raises(ValueError, match="dimension 4"):
        CameraFusion(teacher, Vocabulary(["a"], torch.ones(1, 4)))
    with pytest.raises(ValueError, match="weight"):
        CameraFusion(teacher, vocabulary, weight=1.5)
    with pytest.raises(ValueError, match="temperature"):
        CameraFusion(teacher, vocabulary, temperature=0)


def test_the_runtime_keeps_the_fusions_vocabulary_in_step(segmenter, teacher):
    fusion = CameraFusion(teacher, segmenter.vocabulary)
    runtime = SegmentRuntime(Segmenter(segmenter.model, segmenter.vocabulary), fusion=fusion)
    runtime.set_vocabulary(segmenter.vocabulary.subset(["road", "car"]))
    assert fusion.vocabulary.names == runtime.class_names == ["road", "car"]
    with pytest.raises(ValueError, match="dimension"):
        runtime.set_vocabulary(Vocabulary(["x"], torch.ones(1, 7)))
    assert fusion.vocabulary.names == runtime.class_names == ["road", "car"]
