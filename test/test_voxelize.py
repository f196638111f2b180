"""Voxelization and devoxelization on the real SemanticKITTI scan."""

import numpy as np
import pytest
import torch

from clip_seg3d_ros.voxelize import devoxelize, voxelize

VOXEL = 0.05


@pytest.fixture(scope="module")
def crop(kitti_scan):
    points, _, _ = kitti_scan
    near = np.linalg.norm(points[:, :2], axis=1) < 20.0
    return torch.from_numpy(points[near])


def test_round_trip_is_exact_for_points_alone_in_their_voxel(crop):
    voxels = voxelize(crop[:, :3], crop, VOXEL)
    alone = voxels.counts[voxels.point_to_voxel] == 1
    assert alone.sum() > 1000  # the check below must cover many points
    back = devoxelize(voxels.feats, voxels.point_to_voxel)
    assert torch.equal(back[alone], crop[alone])


def test_voxels_hold_the_mean_of_their_points_and_every_point_its_voxel(crop):
    voxels = voxelize(crop[:, :3], crop.double(), VOXEL)
    cells = np.floor(crop[:, :3].numpy() / VOXEL).astype(np.int64)
    # Independent grouping with numpy: same voxels, same counts, same means.
    unique_cells, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    assert len(voxels.coords) == len(unique_cells)
    np.testing.assert_array_equal(np.sort(voxels.counts.numpy()), np.sort(counts))
    means = np.zeros((len(unique_cells), 4))
    np.add.at(means, inverse.ravel(), crop.double().numpy())
    means /= counts[:, None]
    # Match voxels through their coordinates.
    ours = {tuple(c): row for row, c in enumerate(voxels.coords[:, 1:].tolist())}
    rows = np.array([ours[tuple(c)] for c in unique_cells.tolist()])
    np.testing.assert_allclose(voxels.feats.numpy()[rows], means, rtol=1e-12)
    # Devoxelization: points that shared a voxel all get that voxel's value.
    back = devoxelize(voxels.feats, voxels.point_to_voxel).numpy()
    np.testing.assert_allclose(back, means[inverse.ravel()], rtol=1e-12)
    assert (voxels.coords[:, 0] == 0).all()


def test_batches_never_share_voxels(crop):
    xyz = torch.cat([crop[:, :3], crop[:, :3]])
    batch = torch.cat([torch.zeros(len(crop)), torch.ones(len(crop))]).long()
    voxels = voxelize(xyz, torch.ones(len(xyz), 1), VOXEL, batch_index=batch)
    single = voxelize(crop[:, :3], torch.ones(len(crop), 1), VOXEL)
    assert len(voxels.coords) == 2 * len(single.coords)
    assert torch.equal(voxels.counts[voxels.point_to_voxel[: len(crop)]], single.counts[single.point_to_voxel])


def test_out_of_range_coordinates_are_a_clear_error():
    far = torch.tensor([[0.0, 0.0, 0.0], [5000.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="outside the supported"):
        voxelize(far, far, 0.05)
