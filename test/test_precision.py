"""Reduced-precision inference (autocast) against float32, and the whole network's backward against numerics."""


import numpy as np
import pytest
import torch

from clip_seg3d_ros.models import MinkUNet
from clip_seg3d_ros.segmenter import Segmenter
from clip_seg3d_ros.sparse import SparseTensor


def test_bf16_inference_agrees_with_fp32(small_model, kitti_crop):
    model, vocabulary = small_model
    reference = Segmenter(model, vocabulary)
    fast = Segmenter(model, vocabulary, precision="bf16")
    prepared = reference.preprocess(kitti_crop)
    logits32, logits16 = reference.infer_logits(prepared), fast.infer_logits(prepared)
    assert logits16.dtype == torch.float32 and logits16.shape == logits32.shape
    agreement = (logits16.argmax(1) == logits32.argmax(1)).float().mean()
    assert agreement > 0.97, f"bf16 labels agree with fp32 on {agreement:.3f} of the voxels"
    probabilities = torch.softmax(logits16, 1) - torch.softmax(logits32, 1)
    assert probabilities.abs().max() < 0.2
    labels, scores = fast(kitti_crop)
    assert labels.dtype == np.int32 and scores.dtype == np.float32


def test_unknown_precision_is_a_clear_error(small_model):
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Segmenter(*small_model, precision="fp8")


def test_whole_network_backward_passes_gradcheck():
    # Every convolution kind in one graph, sharing the network's workspace across forward and backward.
    torch.manual_seed(0)
    net = MinkUNet(2, channels=(2,) * 9, blocks_per_stage=1).double().eval()
    cells = torch.randperm(8**3)[:50]
    coords = torch.stack([torch.zeros_like(cells), cells // 64, cells // 8 % 8, cells % 8], dim=1)
    feats = torch.randn(len(coords), 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: net(SparseTensor(f, coords)).feats, (feats,), eps=1e-6, atol=1e-7)


def test_a_network_trains_after_inference_mode_passes():
    # The network's workspace, first filled under inference_mode (as the Segmenter runs), is written again in
    # training (as self-training does between epochs).
    torch.manual_seed(0)
    net = MinkUNet(2, channels=(4,) * 9, blocks_per_stage=1)
    cells = torch.randperm(40**3)[:2000]  # 40 cells a side: several voxels even at stride 16 (BatchNorm)
    coords = torch.stack([torch.zeros_like(cells), cells // 1600, cells // 40 % 40, cells % 40], dim=1)
    feats = torch.randn(len(coords), 2)
    with torch.inference_mode():
        before = net.eval()(SparseTensor(feats, coords)).feats
    out = net.train()(SparseTensor(feats, coords)).feats
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with torch.inference_mode():  # and back: the buffers made in training serve inference too
        after = net.eval()(SparseTensor(feats, coords)).feats
    assert before.shape == after.shape == out.shape
