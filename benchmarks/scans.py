"""What every benchmark here runs on: a generated LiDAR sweep, a scan seen from new poses, and the machine's name.

Shared by the scripts of this folder (``import scans``: a script's own folder is first on ``sys.path``); not part
of the installed package.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch


def generated_sweep(num_points: int = 120_000, seed: int = 0) -> np.ndarray:
    """A 64-beam spinning-LiDAR sweep (HDL-64-like: +2 to -24.8 deg) of a ground plane and obstacles.

    Obstacles are azimuth segments with a random distance and height, so the point density falls with range
    like a real sweep; rays that hit nothing within 100 m give no point. Returns (num_points, 4) float32.
    """
    rng = np.random.default_rng(seed)
    beams, sensor_height, max_range = 64, 1.73, 100.0
    columns = int(np.ceil(1.4 * num_points / beams))  # extra columns make up for rays that hit nothing
    elevation = np.radians(np.linspace(2.0, -24.8, beams))[:, None]
    azimuth = np.linspace(-np.pi, np.pi, columns, endpoint=False)[None, :]
    segments = 150
    distance = np.repeat(rng.uniform(4.0, 60.0, segments), int(np.ceil(columns / segments)))[None, :columns]
    height = np.repeat(rng.uniform(0.5, 12.0, segments), int(np.ceil(columns / segments)))[None, :columns]

    to_ground = np.where(elevation < 0, sensor_height / np.sin(-np.minimum(elevation, -1e-6)), np.inf)
    to_obstacle = distance / np.cos(elevation)
    obstacle_z = to_obstacle * np.sin(elevation)  # height above the sensor where the ray meets the obstacle
    hits_obstacle = (to_obstacle < to_ground) & (obstacle_z < height - sensor_height)
    ray_range = np.where(hits_obstacle, to_obstacle, to_ground)
    ray_range = ray_range + rng.normal(0.0, 0.02, ray_range.shape)
    direction = np.stack(np.broadcast_arrays(
        np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)), axis=-1)
    points = (ray_range[..., None] * direction).reshape(-1, 3)
    returned = (ray_range < max_range).reshape(-1)
    points = points[returned][:num_points]
    if len(points) < num_points:
        raise ValueError(f"could only generate {len(points)} points")
    intensity = rng.uniform(0.0, 1.0, (num_points, 1))
    return np.hstack([points, intensity]).astype(np.float32)


def moved_scans(points: np.ndarray, count: int, seed: int = 0) -> list[np.ndarray]:
    """The scan seen from ``count`` poses: each turned by a random yaw and moved up to 0.5 m in x and y (float32,
    intensity kept). Every pose puts the points in other voxels, so each is a new sweep to the network: caches
    keyed by shape (oneDNN's kernels) must not make repeating one sweep look faster than a moving robot is."""
    rng = np.random.default_rng(seed)
    scans = []
    for _ in range(count):
        yaw = rng.uniform(0.0, 2.0 * np.pi)
        rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        moved = points.copy()
        moved[:, :2] = points[:, :2] @ rotation.T + rng.uniform(-0.5, 0.5, 2)
        scans.append(moved.astype(np.float32))
    return scans


def device_description(device: torch.device) -> str:
    """The device a benchmark ran on, as its output names it: the GPU's name, or the CPU model and thread count."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"cpu: {model}, {torch.get_num_threads()} threads"
