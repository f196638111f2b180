"""benchmarks/node_latency.py and the sweeps every benchmark runs on (benchmarks/scans.py): inputs and the one
JSON object (figures themselves are not asserted: not a test of speed)."""

import json

import numpy as np
import pytest

from clip_seg3d_ros.datasets.scan_file import read_scan
from clip_seg3d_ros.runtime.runtime import STAGES
from clip_seg3d_ros.sparse import conv as conv_module
from clip_seg3d_ros.sparse.conv import onednn_matmuls
from node_latency import main
from scans import generated_sweep, moved_scans


def test_generated_sweep_looks_like_a_64_beam_lidar():
    points = generated_sweep(120_000, seed=0)
    assert points.shape == (120_000, 4) and points.dtype == np.float32
    ranges = np.linalg.norm(points[:, :3], axis=1)
    assert ranges.max() < 100.5 and np.median(ranges) < 30  # dense near the sensor, like a real sweep
    ground = np.abs(points[:, 2] + 1.73) < 0.1
    assert 0.2 < ground.mean() < 0.9  # both ground and obstacles
    np.testing.assert_array_equal(generated_sweep(1000, seed=3), generated_sweep(1000, seed=3))


def test_moved_scans_are_the_same_scene_from_new_poses(kitti_scan):
    points = kitti_scan[0][:2000]
    scans = moved_scans(points, 4, seed=1)
    for scan in scans:
        assert scan.dtype == np.float32 and scan.shape == points.shape
        np.testing.assert_array_equal(scan[:, 2:], points[:, 2:])  # height and intensity kept
        # A rigid motion in the ground plane: distances between points unchanged.
        np.testing.assert_allclose(np.linalg.norm(scan[1:, :3] - scan[:-1, :3], axis=1),
                                   np.linalg.norm(points[1:, :3] - points[:-1, :3], axis=1), atol=1e-4)
        assert np.abs(scan[:, :2] - points[:, :2]).max() > 0.1
    assert len({scan[0, :2].tobytes() for scan in scans}) == 4  # four different poses
    np.testing.assert_array_equal(moved_scans(points, 2, seed=1)[1], scans[1])


def test_bench_prints_one_json_object_for_a_kitti_file(tmp_path, capsys, kitti_scan):
    points, _, _ = kitti_scan
    path = tmp_path / "scan.bin"
    points[:5000].tofile(path)
    np.testing.assert_array_equal(read_scan(path), points[:5000])
    main(["--points", str(path), "--preset", "small", "--warmup", "1", "--repeats", "3", "--device", "cpu"])
    result = json.loads(capsys.readouterr().out)
    assert result["points"] == 5000 and result["preset"] == "small" and result["device"].startswith("cpu")
    assert set(result["ms"]) == set(STAGES)  # the node's stages, timed by the node's code
    for name, stage in result["ms"].items():
        assert 0 <= stage["median"] <= stage["p90"] and (stage["median"] > 0 or name == "fusion"), name
    assert result["ms"]["fusion"]["p90"] < 1.0  # no cameras: nothing to fuse
    assert result["ms"]["total"]["median"] >= result["ms"]["inference"]["median"]
    assert result["cpu_matmul"] == "auto"
    assert result["onednn_matmuls"] is onednn_matmuls()  # what this CPU's rule decided


def test_the_cpu_matmul_option_chooses_the_path_and_the_output_says_which_ran(tmp_path, capsys, kitti_crop,
                                                                              monkeypatch):
    monkeypatch.setattr(conv_module, "_cpu_matmul", "auto")  # the process-wide choice is put back afterwards
    path = tmp_path / "scan.bin"
    kitti_crop[:3000].tofile(path)
    common = ["--points", str(path), "--preset", "small", "--warmup", "0", "--repeats", "1", "--device", "cpu"]
    main([*common, "--cpu-matmul", "mkl"])
    result = json.loads(capsys.readouterr().out)
    assert (result["cpu_matmul"], result["onednn_matmuls"]) == ("mkl", False)
    main([*common, "--cpu-matmul", "onednn"])
    result = json.loads(capsys.readouterr().out)
    assert (result["cpu_matmul"], result["onednn_matmuls"]) == ("onednn", conv_module.onednn_linear_available())
    with pytest.raises(SystemExit):
        main([*common, "--cpu-matmul", "fastest"])
    assert "invalid choice: 'fastest'" in capsys.readouterr().err


def test_bench_reports_its_precision(tmp_path, capsys, kitti_crop):
    path = tmp_path / "scan.bin"
    kitti_crop[:3000].tofile(path)
    main(["--points", str(path), "--preset", "small", "--precision", "bf16", "--warmup", "0", "--repeats", "1",
          "--device", "cpu"])
    assert json.loads(capsys.readouterr().out)["precision"] == "bf16"


def test_a_bin_file_of_the_wrong_size_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.bin"
    np.zeros(7, dtype=np.float32).tofile(path)
    with pytest.raises(ValueError, match="not a whole number of 4-value points"):
        read_scan(path)
