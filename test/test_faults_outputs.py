"""Fault injection, outputs: a bag or metrics file appears whole or not at all, and OS errors are one line.

Disk-full and read-only cases run the real command in a mount namespace of its own (``unshare -m``) on a small
tmpfs, so nothing touches this machine's disks; signals go to real processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from clip_seg3d_ros.files import STAGING_PREFIX, atomic_outputs

TO_BAG = [sys.executable, "-m", "clip_seg3d_ros.tools.to_bag", "--dataset", "synthetic"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(arguments: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(arguments, capture_output=True, text=True, env=ENV, timeout=300, **kwargs)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]  # (not the progress bar)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_outputs_move_together_on_success_and_leave_nothing_on_failure(tmp_path):
    bag, metrics = tmp_path / "new" / "deeper" / "bag", tmp_path / "new" / "metrics.json"
    with pytest.raises(RuntimeError), atomic_outputs([bag, metrics]) as (staged_bag, staged_metrics):
        staged_bag.mkdir()
        (staged_bag / "bag.mcap").write_bytes(b"half a bag")
        raise RuntimeError("the replay failed")
    assert sorted(tmp_path.iterdir()) == []  # no staging folder, not even the parents it made

    metrics.parent.mkdir()
    metrics.write_text("the last run's")
    with atomic_outputs([bag, metrics]) as (staged_bag, staged_metrics):
        staged_bag.mkdir()
        (staged_bag / "bag.mcap").write_bytes(b"a bag")
        staged_metrics.write_text("this run's")
        assert not bag.exists() and metrics.read_text() == "the last run's"  # nothing moves before the end
    assert (bag / "bag.mcap").read_bytes() == b"a bag" and metrics.read_text() == "this run's"
    assert not [path for path in tmp_path.rglob("*") if path.name.startswith(STAGING_PREFIX)]
    with pytest.raises(FileExistsError, match="exists already"), atomic_outputs([bag]):
        pass


@pytest.mark.slow  # a real process or a training run: the slow tier (make test runs it)
def test_to_bag_below_a_file_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = run([*TO_BAG, "--scenes", "1", "--out", str(tmp_path / "a_file" / "bag")])
    assert result.returncode == 1 and "Not a directory" in one_error_line(result)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.slow  # a real process or a training run: the slow tier (make test runs it)
def test_to_bag_sqlite3_into_an_existing_folder_is_refused_in_one_line(tmp_path):
    (tmp_path / "bag").mkdir()
    result = run([*TO_BAG, "--scenes", "1", "--storage", "sqlite3", "--out", str(tmp_path / "bag")])
    assert result.returncode == 1 and "exists already" in one_error_line(result)
    assert list((tmp_path / "bag").iterdir()) == []


@pytest.mark.slow  # a real process or a training run: the slow tier (make test runs it)
@pytest.mark.parametrize(("mount_options", "reason"), [
    ("size=256k", "No space left on device"),
    ("ro", "Read-only file system"),
])
def test_to_bag_on_a_full_or_read_only_disk(tmp_path, mount_options, reason):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare -m as root")
    disk = tmp_path / "disk"
    disk.mkdir()
    # In a mount namespace of its own: a small (or read-only) tmpfs, the command, then what it left there.
    script = (f"mount -t tmpfs -o {mount_options} tmpfs {disk} && "
              f"{' '.join(TO_BAG)} --scenes 3 --out {disk}/runs/bag; echo \"exit=$?\"; ls -A {disk}")
    result = run(["unshare", "-m", "sh", "-c", script])
    assert "exit=1" in result.stdout, (result.stdout, result.stderr)
    assert reason in one_error_line(result)
    assert result.stdout.strip().splitlines()[-1] == "exit=1"  # the disk is empty again: no bag, no folder


@pytest.mark.slow  # a real process or a training run: the slow tier (make test runs it)
def test_sigterm_during_to_bag_leaves_nothing_and_the_next_run_is_not_blocked(tmp_path):
    out = tmp_path / "bag"
    process = subprocess.Popen([*TO_BAG, "--scenes", "40", "--out", str(out)], env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(path.name.startswith(STAGING_PREFIX) for path in tmp_path.iterdir()):
        assert process.poll() is None and time.monotonic() < deadline, "to_bag never started writing"
        time.sleep(0.05)
    time.sleep(0.5)  # some sweeps written
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr, (process.returncode, stderr[-2000:])
    assert list(tmp_path.iterdir()) == []
    result = run([*TO_BAG, "--scenes", "1", "--out", str(out)])
    assert result.returncode == 0, result.stderr
    assert (out / "metadata.yaml").is_file() and (out / "bag.mcap").is_file()
