"""The sparse peer benchmark's one-JSON output, and (where spconv is installed) that both engines agree."""

import json

import numpy as np
import pytest
import torch

import sparse_bench
from clip_seg3d_ros.sparse.conv import onednn_matmuls
from scans import moved_scans


@pytest.mark.parametrize("backend", ["native", "batched"])
def test_sparse_bench_prints_ratios_and_agreeing_outputs(tmp_path, capsys, kitti_crop, backend):
    path = tmp_path / "scan.npy"
    np.save(path, kitti_crop[:20_000])
    sparse_bench.main(["--points", str(path), "--voxel-sizes", "0.4", "--threads", "1", "--repeats", "1",
                       "--backend", backend])
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == backend and result["cpu_matmul"] == "auto"
    assert result["onednn_matmuls"] is onednn_matmuls()  # what this CPU's rule decided
    ops = result["settings"]["0.4 m, 1 thread"]["ops"]
    assert "MinkUNet small forward" in ops and all(op["native_ms"] > 0 for op in ops.values())
    if result["spconv"] is None:  # not installed: native times only
        assert result["ratios"] == {}
        return
    for name, op in ops.items():
        assert op["ratio"] > 0, name
        if "max_abs_difference" in op:  # the same weights and voxels give the same outputs
            assert op["max_abs_difference"] <= 1e-5 * max(op["output_max_abs"], 1.0), name


def test_the_network_labels_the_next_sweep_at_every_run(kitti_crop):
    points = torch.from_numpy(kitti_crop[:8000])
    sweeps = [sparse_bench.Levels(torch.from_numpy(scan), 0.4, torch.device("cpu"))
              for scan in [kitti_crop[:8000], *moved_scans(kitti_crop[:8000], 2)]]
    voxels = [len(sweep.coords[1]) for sweep in sweeps]
    assert len(set(voxels)) > 1  # new poses, other voxels
    ops = sparse_bench.build_ops(sparse_bench.Levels(points, 0.4, torch.device("cpu")), "small", None,
                                 network_sweeps=sweeps)
    native, spconv_run, _ = ops["MinkUNet small forward"]
    assert spconv_run is None
    with torch.inference_mode():
        assert [len(native()) for _ in range(4)] == voxels + voxels[:1]  # in turn, then again from the first
