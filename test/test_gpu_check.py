"""The GPU check script's dry run on the CPU: every section runs and reports, so that a scarce GPU session spends
its minutes measuring, not finding a bug in the script. Run as the GPU session runs it: ``python3
benchmarks/gpu_check.py`` from the repository root with ``.`` on PYTHONPATH (the checkout, not an install)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from clip_seg3d_ros.sparse.conv import cpu_prefers_onednn, onednn_linear_available
from scans import generated_sweep


@pytest.mark.slow  # a real process or a training run: the slow tier (make test runs it)
def test_gpu_check_dry_run_reports_every_section(tmp_path):
    path = tmp_path / "sweep.bin"  # a generated sweep in KITTI's format: runs where the sample data is absent too
    generated_sweep(num_points=8_000).tofile(path)
    env = {**os.environ, "PYTHONPATH": "."}  # the recipe's PYTHONPATH (less the transforms3d wheel: installed here)
    completed = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--points", str(path), "--device", "cpu",
                                "--quick"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    errors = {name: section["error"] for name, section in result.items()
              if isinstance(section, dict) and "error" in section}
    assert errors == {}
    assert result["device_vs_cpu"]["small network, 0.3 m: max abs difference"] == 0.0  # the CPU against itself
    assert all(result["device_vs_cpu"]["float64 gradcheck"].values())
    assert result["syncs_per_map"] == {"skipped": "counted on CUDA only"}
    runs = {(run["precision"], run["sparse_backend"]) for run in result["bench"]}
    assert runs == {(precision, backend) for precision in ("fp32", "bf16") for backend in ("native", "batched")}
    assert all(run["ms"]["total"]["median"] > 0 for run in result["bench"])
    auto = onednn_linear_available() and cpu_prefers_onednn()  # what cpu_matmul auto runs on this CPU
    assert all(run["onednn_matmuls"] is auto for run in result["bench"])
    assert result["sparse"]["onednn_matmuls"] is auto
    for section in ("sparse", "sparse_batched"):
        ops = result[section]["settings"]["0.3 m, 1 thread"]["ops"]
        assert all(op["native_ms"] > 0 for op in ops.values())
    assert result["sparse_batched"]["backend"] == "batched"
    assert all(row["point_label_agreement"] > 0.9 for row in result["precision"])
