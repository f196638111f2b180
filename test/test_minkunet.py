"""The small MinkUNet learns the real SemanticKITTI scan's labels (the whole network, on CPU)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_seg3d_ros import Segmenter, Vocabulary
from clip_seg3d_ros.models import MINKUNET_PRESETS, MinkUNet, ModelConfig, PointSegmentationNet, TextClassifier
from clip_seg3d_ros.segmenter import point_features
from clip_seg3d_ros.sparse import SparseTensor
from clip_seg3d_ros.voxelize import voxelize


@pytest.mark.slow  # a short training run (~25 s)
def test_small_preset_overfits_the_real_scan(kitti_scan):
    points, labels, names = kitti_scan
    crop = (np.linalg.norm(points[:, :2], axis=1) < 12.0) & (labels > 0)  # ~63k labelled points
    points, labels = points[crop], labels[crop]
    torch.manual_seed(0)
    config = ModelConfig.from_preset("small", embed_dim=64, voxel_size=0.1)
    net = PointSegmentationNet(config)
    vocabulary = Vocabulary(names, torch.randn(len(names), config.embed_dim))
    classifier = TextClassifier(vocabulary, config.temperature)
    initial = {name: p.detach().clone() for name, p in net.named_parameters()}

    xyz = torch.from_numpy(points)
    voxels = voxelize(xyz[:, :3], point_features(xyz, config), config.voxel_size)
    target = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _step in range(150):
        logits = classifier(net(SparseTensor(voxels.feats, voxels.coords)))[voxels.point_to_voxel]
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (logits.argmax(1) == target).float().mean() > 0.985:
            break

    unchanged = [name for name, p in net.named_parameters() if torch.equal(p.detach(), initial[name])]
    assert not unchanged, f"parameters that did not learn: {unchanged}"
    predicted, scores = Segmenter(net, vocabulary)(points)  # eval mode: BatchNorm running statistics
    accuracy = (predicted == labels).mean()
    assert accuracy >= 0.95, f"point accuracy {accuracy:.3f} after {_step + 1} steps"
    assert scores.min() > 0 and scores.max() <= 1


@pytest.mark.parametrize("preset", sorted(MINKUNET_PRESETS))
def test_presets_keep_voxels_and_widths(preset):
    net = MinkUNet(4, **MINKUNET_PRESETS[preset]).eval()
    generator = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(0, 40, (500, 3), generator=generator), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], dim=1)
    with torch.no_grad():
        out = net(SparseTensor(torch.randn(len(coords), 4, generator=generator), coords))
    assert out.stride == 1 and torch.equal(out.coords, coords)
    assert out.feats.shape == (len(coords), MINKUNET_PRESETS[preset]["channels"][-1])


def test_standard_preset_is_the_1x_minkunet():
    # torchsparse/SPVNAS MinkUNet cr=1.0 with 4 input channels has 21.7M parameters.
    net = MinkUNet(4, **MINKUNET_PRESETS["standard"])
    assert sum(p.numel() for p in net.parameters()) == 21_721_472
