"""The training pipeline end to end: configs, sample preparation, a real-data config, resume and torchrun."""

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import sample_folder
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_geometry import KITTI_CALIB

from clip_seg3d_ros import Segmenter, load_checkpoint
from clip_seg3d_ros.geometry import project_points
from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.sparse import conv as sparse_conv
from clip_seg3d_ros.synthetic import SyntheticWorld
from clip_seg3d_ros.teacher import (
    PseudoLabelSettings,
    SyntheticTeacherConfig,
    dense_pseudo_labels,
    pseudo_labels_to_points,
)
from clip_seg3d_ros.training.config import ComputeSettings, ConfigError, config_from_dict, load_config
from clip_seg3d_ros.training.data import SamplePreparer, augment_points, build_teacher
from clip_seg3d_ros.training.loop import set_up_process, train

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = ROOT / "training" / "train.py"


def training_script(name: str):
    """training/<name>.py as a module (that folder holds scripts, not a package), to call its main()."""
    spec = importlib.util.spec_from_file_location(f"training_script_{name}", ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A tiny synthetic run: 4 training scenes cropped to 15 m, coarse voxels, 2 steps per epoch.
TINY = ["data.synthetic_train_scenes=4", "data.synthetic_val_scenes=1", "data.max_range=15",
        "model.voxel_size=0.3", "schedule.epochs=2", "schedule.self_training_rounds=1",
        "schedule.self_training_epochs=1", "eval.num_bev=1", "loss.spatial_max_patches=64",
        "optim.samples_per_step=2"]  # two sweeps per step: one per process in the torchrun test


@pytest.fixture(scope="module")
def scene():
    return SyntheticWorld().scene(2)  # its camera sees trucks, motorcycles and a traffic sign


def test_config_file_overrides_and_errors(tmp_path):
    config = load_config(ROOT / "config" / "train" / "synthetic.yaml", ["schedule.epochs=3", "optim.lr=0.01"])
    assert config.schedule.epochs == 3 and config.optim.lr == 0.01 and config.model.voxel_size == 0.3
    assert config.total_epochs == 3 + config.schedule.self_training_rounds * config.schedule.self_training_epochs
    with pytest.raises(ConfigError, match="nonsense"):
        load_config(None, ["loss.nonsense=1"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="setting"):
        load_config(None, ["setting=few_shot"])
    with pytest.raises(ConfigError, match="synthetic teacher"):
        load_config(None, ["data.dataset=semantickitti"])
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")


def test_compute_settings_are_checked_applied_and_recorded(tmp_path):
    config = load_config(None, ["compute.num_threads=3", "compute.cpu_matmul=mkl"])
    assert (config.compute.num_threads, config.compute.cpu_matmul) == (3, "mkl")
    assert load_config(None, []).compute == ComputeSettings(num_threads=1, cpu_matmul="auto")
    with pytest.raises(ConfigError, match="compute.cpu_matmul"):
        load_config(None, ["compute.cpu_matmul=fastest"])
    with pytest.raises(ConfigError, match="compute.num_threads"):
        load_config(None, ["compute.num_threads=0"])
    threads, matmul = torch.get_num_threads(), sparse_conv._cpu_matmul
    try:
        set_up_process(config)
        assert torch.get_num_threads() == 3 and not sparse_conv.onednn_matmuls()  # mkl: never oneDNN
    finally:
        torch.set_num_threads(threads)
        sparse_conv.set_cpu_matmul(matmul)
    # A config saved before the compute section existed reads back with its defaults.
    saved = config.to_dict()
    del saved["compute"]
    assert config_from_dict(saved).compute == ComputeSettings()


def test_nested_settings_have_one_name_and_configs_saved_before_still_load():
    config = load_config(None, ["teacher.synthetic.patch_size=16", "teacher.pseudo_labels.confidence_threshold=0.7"])
    assert config.teacher.synthetic == SyntheticTeacherConfig(patch_size=16)
    assert config.teacher.pseudo_labels == PseudoLabelSettings(confidence_threshold=0.7)
    assert config.model.temperature == ModelConfig.temperature == 0.01
    assert config_from_dict(config.to_dict()) == config  # what config.yaml and the checkpoints hold reads back equal
    saved = config.to_dict()  # as a checkpoint written before the teacher's settings were nested holds it
    teacher = saved["teacher"]
    del teacher["synthetic"], teacher["pseudo_labels"]
    teacher.update(synthetic_patch_size=16, synthetic_noise_std=2.0, synthetic_blur_sigma=0.5, temperature=0.01,
                   prompt_score_threshold=0.5, confidence_threshold=0.7)
    assert config_from_dict(saved) == config


@pytest.mark.parametrize("name", ["synthetic", "synthetic_annotation_free", "semantickitti_zero_shot",
                                  "semantickitti_annotation_free", "nuscenes_zero_shot", "nuscenes_annotation_free"])
def test_every_shipped_config_loads(name):
    config = load_config(ROOT / "config" / "train" / f"{name}.yaml")
    assert config.setting == ("annotation_free" if "annotation_free" in name else "zero_shot")
    assert len(config.data.unseen_classes) == 4


def test_zero_shot_preparation_hides_unseen_labels_and_matches_the_teacher(scene):
    config = load_config(None, [])
    teacher = build_teacher(config.teacher)
    prepared = SamplePreparer(teacher, config, scene.class_names)(scene)
    unseen = [scene.class_names.index(name) for name in config.data.unseen_classes]
    assert not np.isin(prepared.labels, unseen).any()
    truth_unseen = np.isin(scene.labels, unseen)
    assert truth_unseen.sum() > 1000 and (prepared.labels[truth_unseen] == -1).all()
    np.testing.assert_array_equal(prepared.labels[~truth_unseen], scene.labels[~truth_unseen])
    # Pseudo labels are unseen classes only, and the same as the tested 2D -> 3D transfer gives.
    assert set(np.unique(prepared.pseudo_labels)) <= {-1, *unseen}
    frame = scene.cameras[0]
    text = teacher.encode_text(scene.class_names)
    allowed = torch.zeros(len(text), dtype=torch.bool)
    allowed[unseen] = True
    settings = dict(temperature=0.01, prompt_score_threshold=0.5, confidence_threshold=0.5)
    label_map, _ = dense_pseudo_labels(teacher.encode_frames([frame])[0], text, allowed, **settings)
    expected = pseudo_labels_to_points([label_map], [frame.image.shape[:2]],
                                       [project_points(scene.points[:, :3], frame.camera)], len(scene.points))
    np.testing.assert_array_equal(prepared.pseudo_labels, expected)
    # On the unlabelled points (where pseudo labels are used), they are mostly right: the simulated teacher
    # confuses truck with car, but car points carry their ground truth.
    on_unseen = (prepared.point_cell >= 0) & truth_unseen
    labelled = on_unseen & (prepared.pseudo_labels >= 0)
    assert on_unseen.sum() > 100 and labelled.sum() > 0.5 * on_unseen.sum()
    assert (prepared.pseudo_labels[labelled] == scene.labels[labelled]).mean() > 0.9
    # Cells: every camera-visible point has one, their features are the teacher's.
    visible = prepared.point_cell >= 0
    assert (expected[~visible] == -1).all() and 0.1 < visible.mean() < 0.6
    assert prepared.cell_features.shape == (label_map.numel(), teacher.embed_dim)


def test_annotation_free_preparation_has_no_annotations(scene):
    config = load_config(None, ["setting=annotation_free"])
    prepared = SamplePreparer(build_teacher(config.teacher), config, scene.class_names)(scene)
    assert (prepared.labels == -1).all()
    assert len(np.unique(prepared.pseudo_labels[prepared.pseudo_labels >= 0])) > 8  # seen classes too
    correct = prepared.pseudo_labels == scene.labels
    assert correct[prepared.pseudo_labels >= 0].mean() > 0.7


def test_augmentation_is_a_rotation_mirror_and_scale(scene):
    config = load_config(None, [])
    points = scene.points[:2000]
    augmented = augment_points(points, config.augment, np.random.default_rng(0))
    original_distances = np.linalg.norm(points[1:, :3] - points[:-1, :3], axis=1)
    new_distances = np.linalg.norm(augmented[1:, :3] - augmented[:-1, :3], axis=1)
    ratio = new_distances / original_distances
    assert np.allclose(ratio, ratio[0], rtol=1e-4) and 0.95 <= ratio[0] <= 1.05
    np.testing.assert_allclose(augmented[:, 2] / ratio[0], points[:, 2], atol=1e-4)  # z only scales
    np.testing.assert_array_equal(augmented[:, 3], points[:, 3])
    assert not np.allclose(augmented[:, :2], points[:, :2])


def kitti_tree(root: Path) -> Path:
    source = sample_folder("semantickitti_spvnas_000000")
    sequence = root / "sequences" / "00"
    for sub in ("velodyne", "labels", "image_2"):
        (sequence / sub).mkdir(parents=True)
    shutil.copy(source / "000000.bin", sequence / "velodyne" / "000000.bin")
    shutil.copy(source / "000000.label", sequence / "labels" / "000000.label")
    (sequence / "calib.txt").write_text(KITTI_CALIB)
    noise = np.random.default_rng(0).integers(0, 255, size=(370, 1226, 3), dtype=np.uint8)
    Image.fromarray(noise).save(sequence / "image_2" / "000000.png")
    return root


@pytest.mark.slow
def test_the_semantickitti_config_runs_on_kitti_files_with_open_clip(tmp_path):
    """The shipped real config, unchanged but for paths and sizes, on a one-scan KITTI tree (random CLIP)."""
    root = kitti_tree(tmp_path / "kitti")
    overrides = [f"data.root={root}", "data.train_split=['00']", "data.val_split=['00']", "data.max_range=20",
                 "model.preset=small", "model.voxel_size=0.2", "teacher.pretrained=null", "teacher.cache_dir=''",
                 "schedule.epochs=1", "schedule.self_training_rounds=0", "optim.samples_per_step=1",
                 "eval.num_bev=1", "device=cpu"]
    config = load_config(ROOT / "config" / "train" / "semantickitti_zero_shot.yaml", overrides)
    metrics = train(config, tmp_path / "run", progress=False)
    assert set(metrics) >= {"miou", "miou_seen", "miou_unseen", "hiou", "iou_per_class"}
    checkpoint = load_checkpoint(tmp_path / "run" / "model.pt")
    assert checkpoint.clip_model == "ViT-B-16/None" and checkpoint.vocabulary.embed_dim == 512
    assert [n for n, s in zip(checkpoint.vocabulary.names, checkpoint.vocabulary.seen, strict=True) if not s] == \
        config.data.unseen_classes
    assert checkpoint.model_config.preset == "small" and checkpoint.metrics["miou"] == metrics["miou"]
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["points"] == metrics["points"]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"loss/total", "loss/ce", "loss/semantic", "loss/spatial", "lr"} <= set(events.Tags()["scalars"])
    assert np.isfinite([event.value for event in events.Scalars("loss/total")]).all()
    labels, _ = Segmenter.from_checkpoint(tmp_path / "run" / "model.pt")(np.zeros((5, 4), dtype=np.float32))
    assert labels.shape == (5,) and (labels >= 0).all()


def run_script(out: Path, *extra: str, torchrun: int = 0) -> subprocess.Popen:
    """train.py in a subprocess on the TINY config; ``extra``: "--resume" and/or more KEY=VALUE overrides.

    One thread per process everywhere (compute.num_threads, the default): matrix products summed in another
    order would differ in the last bits, and over a few epochs such differences grow beyond what "the same
    model" can be checked with.
    """
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}"] if torchrun else \
        [sys.executable]
    flags = [flag for flag in extra if flag.startswith("--")]
    overrides = [value for value in extra if not value.startswith("--")]
    return subprocess.Popen([*launcher, str(TRAIN_SCRIPT), "--out", str(out), "--quiet", *flags, "--set", *TINY,
                             *overrides], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_model_and_metrics(tmp_path):
    finished(run_script(tmp_path / "whole"))
    killed = run_script(tmp_path / "killed")
    last = tmp_path / "killed" / "last.pt"
    while not last.exists() and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "model.pt").exists(), "the run ended before it could be killed"
    assert load_checkpoint(last).training_state["epoch"] < 3
    finished(run_script(tmp_path / "killed", "--resume"))
    whole = json.loads((tmp_path / "whole" / "eval" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "eval" / "metrics.json").read_text())
    for key in ("miou", "miou_seen", "miou_unseen"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6)
    expected = weights(tmp_path / "whole" / "model.pt")
    for name, tensor in weights(tmp_path / "killed" / "model.pt").items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6)
    # Resuming with another config is refused.
    other = run_script(tmp_path / "killed", "--resume", "optim.lr=0.1")
    output, _ = other.communicate(timeout=600)
    assert other.returncode == 2 and "another config" in output


@pytest.mark.slow
def test_two_processes_under_torchrun_train_the_same_model_as_one(tmp_path):
    """Same sweeps, same augmentations, gradients averaged: the same weights. Not compared: BatchNorm's running
    statistics, which each process updates from its own sweeps (DDP then keeps rank 0's), so the self-training
    phase, whose labels come from the model in eval mode, is left out here."""
    no_self_training = ["schedule.self_training_rounds=0", "schedule.epochs=3"]
    one = run_script(tmp_path / "one", *no_self_training)
    finished(one)
    finished(run_script(tmp_path / "two", *no_self_training, torchrun=2))
    single, double = weights(tmp_path / "one" / "model.pt"), weights(tmp_path / "two" / "model.pt")
    compared = 0
    for name, tensor in single.items():
        if "running" in name or "num_batches" in name:
            continue
        torch.testing.assert_close(double[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
        compared += 1
    assert compared > 20
    torch.manual_seed(0)  # the run's initial weights: training moved them
    initial = PointSegmentationNet(load_checkpoint(tmp_path / "one" / "model.pt").model_config).state_dict()
    assert not torch.allclose(initial["projection.weight"], single["projection.weight"], atol=1e-3)


@pytest.mark.slow
def test_the_same_config_trains_the_same_model_byte_for_byte_however_busy_the_machine(tmp_path):
    """Same input, seed and settings: the same weights, bit for bit, whatever thread count the process started
    with (as on a machine with more cores) and with another process keeping a core busy during one run."""
    config = load_config(None, TINY)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train(config, tmp_path / "quiet", progress=False)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            torch.set_num_threads(4)  # what train() must replace by the config's compute.num_threads
            train(config, tmp_path / "busy", progress=False)
        finally:
            busy.kill()
            busy.wait()
    finally:
        torch.set_num_threads(threads)
    quiet, busy_run = weights(tmp_path / "quiet" / "model.pt"), weights(tmp_path / "busy" / "model.pt")
    assert quiet.keys() == busy_run.keys() and len(quiet) > 20
    different = [name for name, tensor in quiet.items() if not torch.equal(tensor, busy_run[name])]
    assert different == []
    # The thread count and the matmul path are part of the run's recorded config.
    recorded = yaml.safe_load((tmp_path / "busy" / "config.yaml").read_text())["compute"]
    assert recorded == {"num_threads": 1, "cpu_matmul": "auto"}
