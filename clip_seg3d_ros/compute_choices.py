"""The named ways the network can compute, listed once and free of torch: sparse backend, precision, CPU matmul.

The kernels that implement them (:mod:`clip_seg3d_ros.sparse.backend`, :mod:`clip_seg3d_ros.segmenter`,
:mod:`clip_seg3d_ros.sparse.conv`) import these tuples, and so do the settings
(:mod:`clip_seg3d_ros.runtime.settings`) that offer them as choices to the node, replay and the tools.
"""

SPARSE_BACKENDS = ("auto", "native", "batched", "torchsparse")
"""Sparse-convolution kernels (:func:`clip_seg3d_ros.sparse.backend.select_backend`): ``auto`` is torchsparse on
CUDA when installed, else ``native``; ``batched`` is native with each convolution's matmuls in one call."""

PRECISIONS = ("fp32", "bf16", "fp16")
"""The network's precision (:class:`clip_seg3d_ros.segmenter.Segmenter`): bf16 / fp16 autocast, the classifier
stays fp32."""

CPU_MATMULS = ("auto", "onednn", "mkl")
"""Where a CPU float32 convolution's large matmuls run: ``auto``
(:func:`clip_seg3d_ros.sparse.conv.cpu_prefers_onednn`), ``onednn`` (from
:data:`clip_seg3d_ros.sparse.conv.ONEDNN_MIN_MULTIPLY_ADDS`), ``mkl`` (all of them on ``mm``). A process-wide
choice, set by the node, replay and training from their ``cpu_matmul`` setting
(:func:`clip_seg3d_ros.sparse.conv.set_cpu_matmul`)."""
