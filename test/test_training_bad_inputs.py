"""training/train.py and evaluate.py given bad inputs: one ``error: ...`` line, exit code 2.

Each case runs a script's ``main([...])`` in this process and checks, besides the line: that cheap checks come
before expensive ones (CLIP, the model), and that a run failing before its first epoch leaves no --out folder.
A real bug (an exception no user input explains) must keep its traceback.
"""

from pathlib import Path, PurePosixPath

import pytest
import torch
from conftest import write_random_checkpoint
from test_training_pipeline import kitti_tree, training_script

from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.training import data

ROOT = Path(__file__).resolve().parent.parent
KITTI_CONFIG = str(ROOT / "config" / "train" / "semantickitti_zero_shot.yaml")
# The shipped KITTI config on a one-scan tree (see kitti_tree): sequence 00 for both splits, on the CPU.
ONE_SCAN = ["data.train_split=['00']", "data.val_split=['00']", "device=cpu", "teacher.cache_dir=''"]


def fails(script: str, args: list[str], capsys) -> str:
    """Run training/<script>.py's main(args): exit code 2 and exactly one line on stderr, "error: ..."."""
    code = training_script(script).main([*args, "--quiet"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, lines)
    return lines[0]


@pytest.fixture
def no_clip(monkeypatch):
    """Loading CLIP fails the test: whatever is wrong must be found before that."""
    def build_teacher(*args, **kwargs):
        raise AssertionError("the teacher was built before the bad input was reported")

    monkeypatch.setattr(data, "build_teacher", build_teacher)


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    return kitti_tree(tmp_path_factory.mktemp("kitti"))


# -- train.py --------------------------------------------------------------------------------------------------------
def test_an_empty_or_missing_data_root_is_reported_before_clip_loads(tmp_path, capsys, no_clip):
    empty, out = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    line = fails("train", ["--config", KITTI_CONFIG, "--out", str(out), "--set", f"data.root={empty}"], capsys)
    assert "no scans" in line and str(empty) in line and not out.exists()
    line = fails("train", ["--config", KITTI_CONFIG, "--out", str(out), "--set", f"data.root={tmp_path / 'nope'}"],
                 capsys)
    assert "data.root" in line and "is not a folder" in line and not out.exists()


def test_an_unknown_unseen_class_is_reported_before_clip_loads(tmp_path, kitti, capsys, no_clip):
    out = tmp_path / "run"
    line = fails("train", ["--config", KITTI_CONFIG, "--out", str(out), "--set", f"data.root={kitti}", *ONE_SCAN,
                           "data.unseen_classes=[truk]"], capsys)
    assert "data.unseen_classes" in line and "truk" in line and not out.exists()


def test_missing_clip_weights_are_one_line(tmp_path, kitti, capsys):
    out, weights = tmp_path / "run", tmp_path / "missing.safetensors"
    line = fails("train", ["--config", KITTI_CONFIG, "--out", str(out), "--set", f"data.root={kitti}", *ONE_SCAN,
                           f"teacher.pretrained={weights}"], capsys)
    assert "CLIP weights" in line and str(weights) in line and "no such file" in line and not out.exists()


@pytest.mark.parametrize(("name", "content", "named"), [
    ("corrupt.safetensors", b"\x00 not safetensors " * 100, "header"),
    ("pickled.pt", {"path": PurePosixPath("/etc")}, "weights_only=True"),  # not a state dict: code to unpickle
    ("empty.pt", {}, "empty or foreign state dict"),  # open_clip's StopIteration has no message
    ("foreign.pt", {"weight": torch.zeros(2)}, "Missing key(s)"),  # hundreds of keys over many lines
])
def test_clip_weights_that_do_not_load_are_one_line(tmp_path, kitti, capsys, name, content, named):
    out, weights = tmp_path / "run", tmp_path / name
    if isinstance(content, bytes):
        weights.write_bytes(content)
    else:
        torch.save(content, weights)
    line = fails("train", ["--config", KITTI_CONFIG, "--out", str(out), "--set", f"data.root={kitti}", *ONE_SCAN,
                           f"teacher.pretrained={weights}"], capsys)
    assert "could not load CLIP weights" in line and str(weights) in line and named in line and len(line) < 500
    assert "likely succeed" not in line and not out.exists()  # PyTorch's advice to unpickle without weights_only


@pytest.mark.parametrize(("overrides", "named"), [
    (["optim.lrr=0.1"], "optim.lrr"),  # misspelt key
    (["optim.lr=fast"], "optim.lr"),  # wrong type
    (["device=tpu"], "'tpu'"),  # not a device
    (["teacher.kind=open_clip", "teacher.model_name=ViT-Q-99"], "teacher.model_name"),
    (["data.synthetic_cameras=0"], "data.synthetic_cameras"),
])
def test_a_bad_config_value_names_the_key_and_leaves_no_folder(tmp_path, capsys, no_clip, overrides, named):
    out = tmp_path / "run"
    line = fails("train", ["--out", str(out), "--set", *overrides], capsys)
    assert named in line and not out.exists()


@pytest.mark.slow  # a real process or a training run: the slow tier (make test runs it)
def test_a_corrupt_scan_found_in_the_first_epoch_is_one_line(tmp_path, capsys):
    """Data files are read when first used (during the first epoch): a corrupt one is still one line."""
    root = kitti_tree(tmp_path / "kitti")
    scan = root / "sequences" / "00" / "velodyne" / "000000.bin"
    scan.write_bytes(scan.read_bytes()[:-6])  # not a whole number of points any more
    line = fails("train", ["--config", KITTI_CONFIG, "--out", str(tmp_path / "run"), "--set", f"data.root={root}",
                           *ONE_SCAN, "teacher.pretrained=null", "model.voxel_size=0.2", "schedule.epochs=1",
                           "schedule.self_training_rounds=0", "optim.samples_per_step=1"], capsys)
    assert "000000.bin" in line and "whole number" in line


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    line = fails("train", ["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")], capsys)
    assert "no such config file" in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_resume_without_a_last_checkpoint_creates_nothing(tmp_path, capsys, no_clip, folder):
    out = tmp_path / folder
    if folder == "empty":
        out.mkdir()
    line = fails("train", ["--out", str(out), "--resume"], capsys)
    assert "cannot resume" in line and "last.pt" in line
    assert (not out.exists()) if folder == "missing" else not any(out.iterdir())  # no tensorboard/, no config.yaml


def test_resume_from_a_corrupt_or_foreign_last_checkpoint_is_one_line(tmp_path, capsys, no_clip):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    line = fails("train", ["--out", str(out), "--resume"], capsys)
    assert "cannot resume" in line and "corrupt" in line
    write_random_checkpoint(out / "last.pt", ["a", "b"])  # a model, but no training state
    line = fails("train", ["--out", str(out), "--resume"], capsys)
    assert "cannot resume" in line and "no training state" in line
    assert sorted(path.name for path in out.iterdir()) == ["last.pt"]


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only expected failures become one line: a plain ValueError or KeyError from inside is a bug."""
    script = training_script("train")
    for bug in (ValueError("operands could not be broadcast"), KeyError("epoch")):
        def train(*args, bug=bug, **kwargs):
            raise bug

        monkeypatch.setattr(script, "train", train)
        with pytest.raises(type(bug)):
            script.main(["--out", str(tmp_path / "run"), "--quiet"])


# -- evaluate.py -----------------------------------------------------------------------------------------------------
def test_evaluate_with_a_missing_or_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    out, checkpoint = tmp_path / "eval", tmp_path / "model.pt"
    line = fails("evaluate", ["--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    assert str(checkpoint) in line and "no such checkpoint file" in line
    checkpoint.write_bytes(bytes(range(256)) * 8)
    line = fails("evaluate", ["--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    assert str(checkpoint) in line and "not a checkpoint" in line
    assert not out.exists()


def test_evaluate_checks_the_device_and_the_data_before_building_the_model(tmp_path, capsys, monkeypatch):
    out, checkpoint = tmp_path / "eval", write_random_checkpoint(tmp_path / "model.pt", ["car", "road"])
    line = fails("evaluate", ["--checkpoint", str(checkpoint), "--out", str(out), "--device", "tpu"], capsys)
    assert "'tpu'" in line
    def from_checkpoint(*args, **kwargs):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(Segmenter, "from_checkpoint", from_checkpoint)
    empty = tmp_path / "empty"
    empty.mkdir()
    line = fails("evaluate", ["--checkpoint", str(checkpoint), "--out", str(out), "--config", KITTI_CONFIG,
                              "--set", f"data.root={empty}"], capsys)
    assert "no scans" in line and str(empty) in line
    line = fails("evaluate", ["--checkpoint", str(checkpoint), "--out", str(out), "--set", "eval.num_bevs=1"], capsys)
    assert "eval.num_bevs" in line
    assert not out.exists()
