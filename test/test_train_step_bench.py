"""The training-step benchmark: oneDNN and MKL engines train the same network to the same losses."""

import json

import numpy as np
import pytest

import train_step_bench
from clip_seg3d_ros.sparse import conv
from scans import generated_sweep


def test_both_engines_train_alike_and_the_auto_choice_is_restored(tmp_path, capsys, monkeypatch):
    path = tmp_path / "scan.npy"
    np.save(path, generated_sweep(20_000, seed=3))
    monkeypatch.setattr(conv, "_cpu_matmul", "auto")
    train_step_bench.main(["--points", str(path), "--voxel-size", "0.4", "--steps", "3"])
    result = json.loads(capsys.readouterr().out)
    assert conv._cpu_matmul == "auto"  # set_cpu_matmul per engine, and the process's choice put back
    assert result["auto_picks"] == ("onednn" if conv.onednn_matmuls() else "mkl")
    engines = result["engines"]
    assert set(engines) == {"onednn", "mkl"}
    assert engines["mkl"]["onednn_matmuls"] is False
    assert engines["onednn"]["onednn_matmuls"] is conv.onednn_linear_available()
    for engine in engines.values():
        assert len(engine["losses"]) == 3 and engine["step_ms_median"] > 0
        # A learnable target (height bands) on new poses of one scan: the loss goes down.
        assert engine["losses"][2] < engine["losses"][0]
    # The same initialisation and sweeps: the curves differ only by float32 rounding order.
    assert result["loss_curve_max_abs_difference"] <= 1e-4
    assert result["loss_curve_max_abs_difference"] == pytest.approx(
        max(abs(a - b) for a, b in zip(engines["onednn"]["losses"], engines["mkl"]["losses"], strict=True)))
