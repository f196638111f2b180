"""Checkpoints: exact round trip, one clear error for every kind of bad file, never running code."""

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_seg3d_ros import Checkpoint, CheckpointError, Segmenter, load_checkpoint, save_checkpoint
from clip_seg3d_ros.checkpoint import CHECKPOINT_VERSION, load_model


def make_checkpoint(net, vocabulary) -> Checkpoint:
    return Checkpoint(
        model_config=net.config,
        model_state=net.state_dict(),
        vocabulary=vocabulary,
        clip_model="ViT-B-16/openai",
        train_config={"epochs": 3, "setting": "zero-shot"},
        metrics={"miou": 12.5},
    )


@pytest.fixture()
def checkpoint_file(tmp_path, small_model):
    net, vocabulary = small_model
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that they are part of what must survive
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return save_checkpoint(make_checkpoint(net, vocabulary), tmp_path / "model.pt")


def test_round_trip_gives_identical_outputs(checkpoint_file, small_model, kitti_crop):
    net, vocabulary = small_model
    labels, scores = Segmenter(net, vocabulary)(kitti_crop)
    restored = Segmenter.from_checkpoint(checkpoint_file)
    restored_labels, restored_scores = restored(kitti_crop)
    np.testing.assert_array_equal(restored_labels, labels)
    np.testing.assert_array_equal(restored_scores, scores)
    assert len(np.unique(labels)) > 1  # a degenerate output would make the comparison weak

    checkpoint = load_checkpoint(checkpoint_file)
    assert checkpoint.model_config == net.config
    assert checkpoint.vocabulary.names == vocabulary.names and checkpoint.vocabulary.seen == vocabulary.seen
    assert torch.equal(checkpoint.vocabulary.text_embeddings, vocabulary.text_embeddings)
    assert checkpoint.vocabulary.prompt_templates == ["a photo of a {}."]
    assert (checkpoint.clip_model, checkpoint.train_config, checkpoint.metrics) == (
        "ViT-B-16/openai", {"epochs": 3, "setting": "zero-shot"}, {"miou": 12.5})


def test_truncated_file_is_a_clear_error(checkpoint_file):
    data = checkpoint_file.read_bytes()
    checkpoint_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{checkpoint_file}: truncated or corrupt checkpoint") as caught:
        Segmenter.from_checkpoint(checkpoint_file)
    assert "failed finding central directory" in str(caught.value)  # PyTorch's reason, without its advice


def test_garbage_and_missing_files_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=rf"{garbage}: not a checkpoint \(not a PyTorch file, or corrupt\)$"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.pt")


def test_foreign_and_future_files_are_clear_errors(tmp_path, checkpoint_file):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a clip_seg3d_ros checkpoint"):
        load_checkpoint(foreign)

    payload = torch.load(checkpoint_file, weights_only=True)
    payload["format_version"] = CHECKPOINT_VERSION + 1
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match=f"format version {CHECKPOINT_VERSION + 1} is not supported"):
        load_checkpoint(future)


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path, checkpoint_file):
    payload = torch.load(checkpoint_file, weights_only=True)
    payload["model_config"]["channels"] = [8] * 9
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    with pytest.raises(CheckpointError, match=rf"{mismatched}: weights do not fit the model config"):
        load_model(mismatched)


class _Exploit:
    """Unpickling this would create a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_cannot_run_code(tmp_path, checkpoint_file):
    payload = torch.load(checkpoint_file, weights_only=True)
    marker = tmp_path / "code-ran"
    payload["metrics"] = {"evil": _Exploit(marker)}
    evil = tmp_path / "evil.pt"
    torch.save(payload, evil, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="holds Python objects a checkpoint may not contain") as caught:
        load_checkpoint(evil)
    assert not marker.exists()
    message = str(caught.value)
    assert "Unsupported global: GLOBAL getattr" in message and "never do" in message  # the global pickle used
    assert "weights_only" not in message and "Re-running" not in message  # never PyTorch's advice to run it


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoints_get_the_users_normal_file_mode(tmp_path, small_model, umask, mode):
    """0666 less the umask, as any file the user writes (mkstemp's 0600 kept a node of another user out)."""
    previous = os.umask(umask)
    try:
        path = save_checkpoint(make_checkpoint(*small_model), tmp_path / "model.pt")
        again = save_checkpoint(make_checkpoint(*small_model), path)  # replacing a file: the same mode
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(again.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # the temporary was renamed, not copied


def test_a_failed_save_keeps_the_previous_file(monkeypatch, checkpoint_file, small_model):
    before = checkpoint_file.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(make_checkpoint(*small_model), checkpoint_file)
    assert checkpoint_file.read_bytes() == before
    assert list(checkpoint_file.parent.iterdir()) == [checkpoint_file]  # no temporary left behind
