"""torchsparse and the native kernel agree on one network and one weight set (CUDA + torchsparse only)."""

import numpy as np
import pytest
import torch

from clip_seg3d_ros import Segmenter
from clip_seg3d_ros.sparse import select_backend, torchsparse_available

needs_torchsparse = pytest.mark.skipif(
    not (torchsparse_available() and torch.cuda.is_available()), reason="needs torchsparse and a CUDA device"
)


def test_auto_backend_is_native_without_cuda_and_explicit_torchsparse_is_refused():
    assert select_backend("cpu") == "native"
    with pytest.raises(ValueError, match="needs the torchsparse package and a CUDA device"):
        select_backend("cpu", "torchsparse")
    with pytest.raises(ValueError, match="unknown sparse backend"):
        select_backend("cpu", "spconv")


@needs_torchsparse
def test_torchsparse_matches_native_on_the_real_scan(small_model, kitti_crop):
    net, vocabulary = small_model
    native = Segmenter(net, vocabulary, device="cuda", sparse_backend="native")
    reference = torch.softmax(native.infer_logits(native.preprocess(kitti_crop)), dim=1)
    accelerated = Segmenter(net, vocabulary, device="cuda", sparse_backend="torchsparse")  # the same weights
    assert accelerated.sparse_backend == "torchsparse"
    probabilities = torch.softmax(accelerated.infer_logits(accelerated.preprocess(kitti_crop)), dim=1)
    agreement = (probabilities.argmax(dim=1) == reference.argmax(dim=1)).float().mean().item()
    assert agreement > 0.999, agreement  # fp32 kernels sum in different orders; near-ties may flip
    np.testing.assert_allclose(probabilities.cpu().numpy(), reference.cpu().numpy(), atol=1e-3)
