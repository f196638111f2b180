"""Fault injection, training: a run never loses or corrupts work, and a bad config is one line before any folder.

Each case runs training/train.py's main() (or the library piece it exercises) and checks the exit code, the one
``error:`` line and what is on disk afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training_pipeline import TINY, training_script

from clip_seg3d_ros.models import ModelConfig, PointSegmentationNet
from clip_seg3d_ros.training import loop, self_training
from clip_seg3d_ros.training.config import ConfigError, config_from_dict, load_config
from clip_seg3d_ros.vocabulary import Vocabulary


def fails(args: list[str], capsys) -> str:
    code = training_script("train").main([*args, "--quiet"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, lines)
    return lines[0]


def test_an_out_folder_holding_another_run_is_refused_without_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_bytes(b"another run's model")
    (out / "config.yaml").write_text("seed: 7\n")
    line = fails(["--out", str(out), "--set", *TINY], capsys)
    assert "holds another run (config.yaml, model.pt)" in line and "--resume" in line
    assert (out / "model.pt").read_bytes() == b"another run's model"
    assert (out / "config.yaml").read_text() == "seed: 7\n"
    assert sorted(path.name for path in out.iterdir()) == ["config.yaml", "model.pt"]


@pytest.mark.parametrize(("overrides", "words"), [
    (["optim.lr=0"], "'optim.lr' must be in [1e-09, 10], got 0.0"),
    (["optim.lr=nan"], "'optim.lr' must be a finite number"),
    (["model.voxel_size=inf"], "'model.voxel_size' must be a finite number"),
    (["loss.semantic_temperature=0"], "'loss.semantic_temperature' must be in"),
    (["model.intensity_scale=-1"], "'model.intensity_scale' must be in"),
    (["augment.scale=[0.9,.nan]"], "'augment.scale[1]' must be a finite number"),
    (["teacher.synthetic.noise_std=.inf"], "'teacher.synthetic.noise_std' must be a finite number"),
    (["compute.num_threads=100000"], "'compute.num_threads' must be in [1, 256] threads"),
    (["data.root=${oc.env:HOME}"], "data.root: interpolations ('${oc.env:HOME}') are not allowed"),
])
def test_a_bad_number_or_an_interpolation_is_one_line_before_any_folder(tmp_path, capsys, overrides, words):
    out = tmp_path / "runs" / "new"
    line = fails(["--out", str(out), "--set", *overrides], capsys)
    assert words in line and not (tmp_path / "runs").exists()


def test_a_yaml_syntax_error_or_an_environment_interpolation_in_the_file_is_one_line(tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim:\n  lr: [0.1\nseed: 1\n")
    line = fails(["--config", str(broken), "--out", str(tmp_path / "run")], capsys)
    assert str(broken) in line and "not valid YAML" in line and not (tmp_path / "run").exists()
    # A secret in the environment never reaches config.yaml or a checkpoint: the interpolation is refused.
    monkeypatch.setenv("CLIP_SEG3D_TEST_SECRET", "hunter2")
    secret = tmp_path / "secret.yaml"
    secret.write_text("data:\n  root: ${oc.env:CLIP_SEG3D_TEST_SECRET}\n")
    line = fails(["--config", str(secret), "--out", str(tmp_path / "run")], capsys)
    assert "interpolations" in line and "hunter2" not in line and not (tmp_path / "run").exists()


def test_a_stored_config_is_never_resolved_against_the_environment(monkeypatch):
    monkeypatch.setenv("CLIP_SEG3D_TEST_ROOT", "/somewhere/else")
    stored = load_config(None, []).to_dict()
    stored["data"]["root"] = "${oc.env:CLIP_SEG3D_TEST_ROOT}"  # a checkpoint's config, written by hand
    with pytest.raises(ConfigError, match="interpolations"):
        config_from_dict(stored)


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_term_with_no_model(tmp_path, capsys, monkeypatch):
    real = loop.sample_losses
    calls = []

    def nan_on_the_third_sweep(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            losses = {**losses, "semantic": torch.tensor(float("nan")), "total": torch.tensor(float("nan"))}
        return losses

    monkeypatch.setattr(loop, "sample_losses", nan_on_the_third_sweep)
    out = tmp_path / "run"
    line = fails(["--out", str(out), "--set", *TINY], capsys)
    assert "the loss term 'semantic' is nan at epoch 1, step 2" in line and "no model written" in line
    assert not (out / "model.pt").exists() and not (out / "last.pt").exists()
    assert not list(out.glob(".*.tmp"))


def test_self_training_with_no_point_in_any_segment_keeps_the_labels():
    # Used to raise IndexError (an empty segment table indexed with 0) on synthetic worlds where nothing stands
    # above the ground among the unannotated points.
    labels = np.array([2, -1, 0, -1])
    segment = np.full(4, -1)
    np.testing.assert_array_equal(self_training.spread_over_segments(labels, segment, 3, 0.3), labels)


def test_cached_self_training_labels_are_keyed_by_the_model_and_the_config():
    torch.manual_seed(0)
    model = PointSegmentationNet(ModelConfig.from_preset("small", embed_dim=8, voxel_size=0.3))
    vocabulary = Vocabulary(["road", "car"], torch.randn(2, 8))
    config = load_config(None, [])
    key = self_training.labels_key(model, vocabulary, config)
    assert key == self_training.labels_key(model, vocabulary, config)
    assert key != self_training.labels_key(model, vocabulary, load_config(None, ["seed=1"]))
    assert key != self_training.labels_key(model, Vocabulary(["road", "truck"], vocabulary.text_embeddings), config)
    with torch.no_grad():
        next(model.parameters()).add_(1e-6)
    assert key != self_training.labels_key(model, vocabulary, config)
