"""The training-step benchmark: oneDNN and MKL engines train the same network to the same losses."""

import json

import numpy as np
import pytest

from clip_seg3d_ros.sparse import conv
from clip_seg3d_ros.tools import train_step_bench
from clip_seg3d_ros.tools.bench import generated_sweep


def test_both_engines_train_alike_and_the_shipped_threshold_is_restored(tmp_path, capsys):
    path = tmp_path / "scan.npy"
    np.save(path, generated_sweep(20_000, seed=3))
    shipped = conv.ONEDNN_MIN_MULTIPLY_ADDS
    train_step_bench.main(["--points", str(path), "--voxel-size", "0.4", "--steps", "3"])
    result = json.loads(capsys.readouterr().out)
    assert shipped == conv.ONEDNN_MIN_MULTIPLY_ADDS
    engines = result["engines"]
    assert set(engines) == {"onednn", "mkl"}
    for engine in engines.values():
        assert len(engine["losses"]) == 3 and engine["step_ms_median"] > 0
        # A learnable target (height bands) on new poses of one scan: the loss goes down.
        assert engine["losses"][2] < engine["losses"][0]
    # The same initialisation and sweeps: the curves differ only by float32 rounding order.
    assert result["loss_curve_max_abs_difference"] <= 1e-4
    assert result["loss_curve_max_abs_difference"] == pytest.approx(
        max(abs(a - b) for a, b in zip(engines["onednn"]["losses"], engines["mkl"]["losses"], strict=True)))
