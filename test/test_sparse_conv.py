"""Every sparse convolution against its dense PyTorch reference (values and gradients, float64), the fast kernel
maps against the plain search, and the convolution's own backward against autograd's numerical gradients."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import clip_seg3d_ros.sparse.conv as conv_module
from clip_seg3d_ros.sparse import CoordinateCache, SparseTensor, Workspace, kernel_offsets, sparse_conv3d
from clip_seg3d_ros.sparse.conv import batched_products, gather_matmul_scatter
from clip_seg3d_ros.sparse.coords import CoordinateIndex, downsample_coords, hash_coords, unhash_coords
from clip_seg3d_ros.sparse.kernel_map import (
    LevelBox,
    downsampling_map,
    grid_submanifold_map,
    searched_map,
    submanifold_map,
)

GRID = 7  # dense grid cells per axis
BATCH = 2
CHANNELS = [(1, 1), (3, 5), (8, 4)]


def random_sparse(num: int, channels: int, tensor_stride: int, seed: int) -> SparseTensor:
    """Distinct random voxels in a GRID^3 box per batch item, at multiples of ``tensor_stride``."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.randperm(BATCH * GRID**3, generator=generator)[:num]
    batch, rest = cells // GRID**3, cells % GRID**3
    xyz = torch.stack([rest // GRID**2, (rest // GRID) % GRID, rest % GRID], dim=1) * tensor_stride
    coords = torch.cat([batch[:, None], xyz], dim=1)
    feats = torch.randn(num, channels, generator=generator, dtype=torch.float64)
    return SparseTensor(feats=feats.requires_grad_(), coords=coords, stride=tensor_stride)


def to_dense(feats: torch.Tensor, coords: torch.Tensor, tensor_stride: int, size: int) -> torch.Tensor:
    dense = feats.new_zeros(BATCH, feats.shape[1], size, size, size)
    cells = coords[:, 1:] // tensor_stride
    dense[coords[:, 0], :, cells[:, 0], cells[:, 1], cells[:, 2]] = feats
    return dense


def gather_dense(dense: torch.Tensor, coords: torch.Tensor, tensor_stride: int, shift: int) -> torch.Tensor:
    cells = coords[:, 1:] // tensor_stride + shift
    return dense[coords[:, 0], :, cells[:, 0], cells[:, 1], cells[:, 2]]


def dense_weight(kernel: torch.Tensor, kernel_size: int, transposed: bool) -> torch.Tensor:
    """Our (K, C_in, C_out) kernel as conv3d's (C_out, C_in, k, k, k) or conv_transpose3d's (C_in, C_out, ...)."""
    kernel3d = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
    c_in, c_out = kernel3d.shape[1:]
    shape = (c_in, c_out) if transposed else (c_out, c_in)
    weight = kernel.new_zeros(*shape, kernel_size, kernel_size, kernel_size)
    low = -((kernel_size - 1) // 2)
    for index, (dx, dy, dz) in enumerate(kernel_offsets(kernel_size).tolist()):
        weight[:, :, dx - low, dy - low, dz - low] = kernel3d[index] if transposed else kernel3d[index].T
    return weight


def random_kernel(kernel_size: int, stride: int, c_in: int, c_out: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (c_in, c_out) if kernel_size == 1 and stride == 1 else (kernel_size**3, c_in, c_out)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


def assert_grads_match(sparse_out, dense_out_at_sites, x, kernel, seed):
    """Back-propagate the same random cotangent through both paths and compare input and weight grads."""
    cotangent = torch.randn(sparse_out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    grad_x_sparse, grad_k_sparse = torch.autograd.grad((sparse_out * cotangent).sum(), [x, kernel])
    grad_x_dense, grad_k_dense = torch.autograd.grad((dense_out_at_sites * cotangent).sum(), [x, kernel])
    torch.testing.assert_close(grad_x_sparse, grad_x_dense, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad_k_sparse, grad_k_dense, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("tensor_stride", [1, 2])
def test_submanifold_conv_matches_dense(kernel_size, channels, tensor_stride):
    c_in, c_out = channels
    x = random_sparse(120, c_in, tensor_stride, seed=kernel_size * 10 + c_in)
    kernel = random_kernel(kernel_size, 1, c_in, c_out, seed=1)
    out = sparse_conv3d(x, kernel, kernel_size, stride=1)
    assert torch.equal(out.coords, x.coords) and out.stride == tensor_stride

    pad_low, pad_high = (kernel_size - 1) // 2, kernel_size // 2
    dense_in = F.pad(to_dense(x.feats, x.coords, tensor_stride, GRID), (pad_low, pad_high) * 3)
    dense_out = F.conv3d(dense_in, dense_weight(kernel, kernel_size, transposed=False))
    expected = gather_dense(dense_out, x.coords, tensor_stride, shift=0)
    torch.testing.assert_close(out.feats, expected, rtol=1e-10, atol=1e-10)
    assert_grads_match(out.feats, expected, x.feats, kernel, seed=2)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("tensor_stride", [1, 2])
def test_strided_conv_matches_dense(kernel_size, channels, tensor_stride):
    c_in, c_out = channels
    stride = 2
    x = random_sparse(150, c_in, tensor_stride, seed=kernel_size * 7 + c_out)
    kernel = random_kernel(kernel_size, stride, c_in, c_out, seed=3)
    out = sparse_conv3d(x, kernel, kernel_size, stride=stride)
    out_stride = tensor_stride * stride
    assert out.stride == out_stride
    # Output voxels: the inputs floored to the coarser grid, each exactly once.
    expected_coords = {(b, x_ // out_stride * out_stride, y // out_stride * out_stride, z // out_stride * out_stride)
                       for b, x_, y, z in x.coords.tolist()}
    assert set(map(tuple, out.coords.tolist())) == expected_coords and len(out.coords) == len(expected_coords)

    pad_low = (kernel_size - 1) // 2
    dense_in = F.pad(to_dense(x.feats, x.coords, tensor_stride, GRID), (pad_low, kernel_size) * 3)
    dense_out = F.conv3d(dense_in, dense_weight(kernel, kernel_size, transposed=False), stride=stride)
    expected = gather_dense(dense_out, out.coords, out_stride, shift=0)
    torch.testing.assert_close(out.feats, expected, rtol=1e-10, atol=1e-10)
    assert_grads_match(out.feats, expected, x.feats, kernel, seed=4)


@pytest.mark.parametrize("kernel_size", [1, 2, 3])
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("stride", [1, 2])
def test_transposed_conv_matches_dense(kernel_size, channels, stride):
    c_in, c_out = channels
    fine = random_sparse(150, 2, tensor_stride=1, seed=kernel_size + 5 * c_in)
    coarse_coords = fine.cache.coords_at(stride)
    generator = torch.Generator().manual_seed(6)
    coarse_feats = torch.randn(len(coarse_coords), c_in, generator=generator, dtype=torch.float64).requires_grad_()
    coarse = SparseTensor(feats=coarse_feats, coords=coarse_coords, stride=stride, cache=fine.cache)
    kernel = random_kernel(kernel_size, stride, c_in, c_out, seed=7)
    out = sparse_conv3d(coarse, kernel, kernel_size, stride=stride, transposed=True)
    assert out.stride == 1 and out.coords is fine.coords  # the encoder level's exact coordinates

    dense_in = to_dense(coarse_feats, coarse_coords, stride, GRID)
    dense_out = F.conv_transpose3d(dense_in, dense_weight(kernel, kernel_size, transposed=True), stride=stride)
    pad_low = (kernel_size - 1) // 2
    dense_out = F.pad(dense_out, (0, GRID + pad_low) * 3)  # room for fine voxels no coarse voxel reaches
    expected = gather_dense(dense_out, out.coords, 1, shift=pad_low)
    torch.testing.assert_close(out.feats, expected, rtol=1e-10, atol=1e-10)
    assert_grads_match(out.feats, expected, coarse_feats, kernel, seed=8)


def test_transposed_conv_without_encoder_level_is_a_clear_error():
    x = random_sparse(20, 2, tensor_stride=2, seed=0)
    kernel = random_kernel(2, 2, 2, 2, seed=0)
    with pytest.raises(ValueError, match="needs the coordinates of stride 1"):
        sparse_conv3d(x, kernel, 2, stride=2, transposed=True)


def test_kernel_offsets_follow_torchsparse_order():
    # Odd volume: x varies fastest; even volume: z varies fastest (torchsparse/MinkowskiEngine layout).
    odd = kernel_offsets(3).tolist()
    assert odd[:3] == [[-1, -1, -1], [0, -1, -1], [1, -1, -1]] and odd[13] == [0, 0, 0]
    even = kernel_offsets(2).tolist()
    assert even == [list(p) for p in itertools.product([0, 1], repeat=3)]


def test_hash_round_trip_and_lookup():
    coords = torch.tensor([[0, -5, 3, 7], [1, 16383, -16384, 0], [3, 0, 0, 0], [0, 1, 2, 3]])
    torch.testing.assert_close(unhash_coords(hash_coords(coords)), coords)
    index = CoordinateIndex(coords)
    queries = torch.tensor([[1, 16383, -16384, 0], [0, 1, 2, 4], [3, 0, 0, 0]])
    assert index.lookup(queries).tolist() == [1, -1, 2]
    coarse, parent = downsample_coords(coords, 4)
    assert coarse.tolist() == [[0, -8, 0, 4], [0, 0, 0, 0], [1, 16380, -16384, 0], [3, 0, 0, 0]]
    assert parent.tolist() == [0, 2, 3, 1]
    for stride in (2, 3, 8):  # powers of two clear low bits, others divide: both floor, negatives included
        coarse, parent = downsample_coords(coords, stride)
        floored = torch.cat([coords[:, :1], torch.div(coords[:, 1:], stride, rounding_mode="floor") * stride], 1)
        assert torch.equal(coarse[parent], floored)


def test_kernel_maps_are_built_once_per_shape():
    x = random_sparse(60, 3, tensor_stride=1, seed=1)
    kernel = random_kernel(3, 1, 3, 3, seed=1)
    sparse_conv3d(sparse_conv3d(x, kernel, 3), kernel, 3)
    assert list(x.cache.kernel_maps) == [(1, 1, 3)]
    assert isinstance(x.cache, CoordinateCache)


def test_coordinates_that_would_alias_in_the_hash_are_refused():
    coords = torch.tensor([[0, 0, 0, 0], [0, 20000, 0, 0]])
    with pytest.raises(ValueError, match="outside the supported"):
        SparseTensor(feats=torch.zeros(2, 1), coords=coords)


def pair_sets(kernel_map, volume):
    """{offset: set of (input row, output row)}, the identity offset's pairs included."""
    pairs = {}
    for offset in range(volume):
        rows_in, rows_out = kernel_map.pairs(offset)
        pairs[offset] = set(zip(rows_in.tolist(), rows_out.tolist(), strict=True))
    if kernel_map.identity_offset is not None:
        pairs[kernel_map.identity_offset] = {(i, i) for i in range(kernel_map.num_outputs)}
    return pairs


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("tensor_stride", [1, 2])
def test_submanifold_map_equals_the_searched_map(kernel_size, tensor_stride):
    # Unsorted coordinates (random_sparse permutes them), two batch items, negative coordinates.
    x = random_sparse(200, 1, tensor_stride, seed=kernel_size + tensor_stride)
    coords = x.coords - 3 * tensor_stride
    index = CoordinateIndex(coords)
    searched = searched_map(index, len(coords), coords, kernel_size, tensor_stride)
    box = LevelBox(coords, tensor_stride, kernel_size // 2)
    for fast in (submanifold_map(index, kernel_size, tensor_stride),  # the 64-bit hash keys searched
                 submanifold_map(index, kernel_size, tensor_stride, box)):  # the box's 32-bit cell numbers
        assert pair_sets(fast, kernel_size**3) == pair_sets(searched, kernel_size**3)
        assert sum(end - start for _, start, end in fast.segments) == fast.rows_in.numel()


def test_level_box_cells_are_unique_in_key_order_and_a_step_moves_by_cells():
    x = random_sparse(200, 1, 2, seed=12)
    coords = x.coords - 6  # negative coordinates too
    box = LevelBox(coords, stride=2, radius=1)
    assert box.extent == [BATCH] + [GRID + 2] * 3 and box.volume == BATCH * (GRID + 2) ** 3
    order = torch.argsort(hash_coords(coords))
    assert bool((box.cells[order][1:] > box.cells[order][:-1]).all())  # key order, no two voxels share a cell
    moved = coords + torch.tensor([0, 2, -2, 4])  # (1, -1, 2) cells
    both = LevelBox(torch.cat([coords, moved]), 2, 1)
    assert torch.equal(both.cells[len(coords):], both.cells[:len(coords)] + both.step(1, -1, 2))


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("tensor_stride", [1, 2])
def test_grid_submanifold_map_equals_the_searched_map(kernel_size, tensor_stride):
    x = random_sparse(200, 1, tensor_stride, seed=10 + kernel_size + tensor_stride)
    coords = x.coords - 3 * tensor_stride
    grid = grid_submanifold_map(LevelBox(coords, tensor_stride, kernel_size // 2), kernel_size)
    searched = searched_map(CoordinateIndex(coords), len(coords), coords, kernel_size, tensor_stride)
    assert pair_sets(grid, kernel_size**3) == pair_sets(searched, kernel_size**3)


def test_a_cpu_cache_takes_the_grid_only_for_a_small_box(monkeypatch):
    from clip_seg3d_ros.sparse import tensor

    built = []

    def recording(name, builder):
        def recorded(*args, **kwargs):
            built.append((name, builder(*args, **kwargs)))
            return built[-1][1]
        return recorded

    for name in ("grid_submanifold_map", "submanifold_map"):
        monkeypatch.setattr(tensor, name, recording(name, getattr(tensor, name)))
    x = random_sparse(200, 1, 1, seed=3)
    assert x.cache.kernel_map(1, 1, 3) is built[0][1] and built[0][0] == "grid_submanifold_map"  # 2 x 9^3 cells
    far = x.coords.clone()
    far[0, 1:] = 5000  # one voxel far away: millions of cells per voxel, the column search serves
    y = SparseTensor(x.feats, far)
    expected = searched_map(CoordinateIndex(far), len(far), far, 3, 1)
    assert pair_sets(y.cache.kernel_map(1, 1, 3), 27) == pair_sets(expected, 27)
    assert [name for name, _ in built] == ["grid_submanifold_map", "submanifold_map"]


@pytest.mark.parametrize("kind", ["submanifold", "grid", "downsampling", "transposed", "searched"])
def test_pairs_by_output_are_a_stable_sort_of_the_output_rows(kind):
    # The counting sort of by_output() gives exactly the permutation of a stable argsort, and the run starts.
    x = random_sparse(220, 1, 1, seed=5)
    coords = x.coords
    coarse, parent = downsample_coords(coords, 2)
    kernel_map = {
        "submanifold": lambda: submanifold_map(CoordinateIndex(coords), 3, 1),
        "grid": lambda: grid_submanifold_map(LevelBox(coords, 1, 1), 3),
        "downsampling": lambda: downsampling_map(coords, 1, parent, len(coarse)),
        "transposed": lambda: searched_map(CoordinateIndex(coords), len(coords), coarse, 2, 1).transposed(),
        "searched": lambda: searched_map(CoordinateIndex(coords), len(coords), coords, 3, 1),
    }[kind]()
    order, starts = kernel_map.by_output()
    assert torch.equal(order, torch.argsort(kernel_map.rows_out, stable=True))
    counts = torch.bincount(kernel_map.rows_out, minlength=kernel_map.num_outputs)
    assert torch.equal(starts, counts.cumsum(0) - counts)


@pytest.mark.parametrize("tensor_stride", [1, 2, 4])
def test_downsampling_map_equals_the_searched_map(tensor_stride):
    x = random_sparse(250, 1, tensor_stride, seed=tensor_stride)
    coords = x.coords - 5 * tensor_stride  # negative coordinates floor to the cell below
    coarse, parent = downsample_coords(coords, 2 * tensor_stride)
    fast = downsampling_map(coords, tensor_stride, parent, len(coarse))
    searched = searched_map(CoordinateIndex(coords), len(coords), coarse, 2, tensor_stride)
    assert pair_sets(fast, 8) == pair_sets(searched, 8)
    assert sorted(fast.rows_in.tolist()) == list(range(len(coords)))  # every input exactly once


@pytest.mark.parametrize(("kernel_size", "stride", "transposed"),
                         [(3, 1, False), (5, 1, False), (2, 1, False), (2, 2, False), (3, 2, False),
                          (2, 2, True), (3, 2, True)])
def test_backward_passes_gradcheck(kernel_size, stride, transposed):
    # The custom backward against autograd's finite differences (float64), input and weight gradients.
    fine = random_sparse(60, 3, tensor_stride=1, seed=kernel_size * 3 + stride)
    if transposed:
        coarse_coords = fine.cache.coords_at(stride)
        feats = torch.randn(len(coarse_coords), 3, dtype=torch.float64, requires_grad=True)
    else:
        feats = fine.feats.detach().clone().requires_grad_()
    kernel = random_kernel(kernel_size, stride, 3, 2, seed=5)

    def convolve(feats, kernel):
        if transposed:
            x = SparseTensor(feats=feats, coords=coarse_coords, stride=stride, cache=fine.cache)
        else:
            x = SparseTensor(feats=feats, coords=fine.coords, cache=fine.cache)
        return sparse_conv3d(x, kernel, kernel_size, stride=stride, transposed=transposed).feats

    assert torch.autograd.gradcheck(convolve, (feats, kernel), eps=1e-6, atol=1e-8)


def test_convolutions_record_one_autograd_node_and_save_no_gathered_rows():
    x = random_sparse(150, 4, tensor_stride=1, seed=3)
    kernel = random_kernel(3, 1, 4, 5, seed=3)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        out = sparse_conv3d(x, kernel, 3)
    assert type(out.feats.grad_fn).__name__ == "KernelMapConvolutionBackward"
    assert saved == [x.feats.shape, kernel.shape]  # the input and the weight, nothing per pair


def test_autocast_runs_the_convolution_in_its_dtype():
    x = random_sparse(150, 8, tensor_stride=1, seed=4)
    x = x.with_feats(x.feats.detach().float())
    kernel = random_kernel(3, 1, 8, 8, seed=4).detach().float()
    reference = sparse_conv3d(x, kernel, 3).feats
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse_conv3d(x, kernel, 3).feats
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.1)


def test_batched_matmuls_give_the_per_offset_convolution_and_its_gradients():
    # The batched backend (one padded bmm per convolution, float64) against the per-offset loop, for every kind
    # of convolution: values, input and weight gradients.
    fine = random_sparse(90, 3, tensor_stride=1, seed=21)
    for kernel_size, stride, transposed in ((3, 1, False), (2, 2, False), (2, 2, True), (3, 2, False)):
        results = []
        for backend in ("native", "batched"):
            cache = CoordinateCache(backend=backend)
            level = SparseTensor(fine.feats, fine.coords, 1, cache)
            if transposed:
                level = SparseTensor(torch.randn(len(cache.coords_at(2)), 3, dtype=torch.float64,
                                                 generator=torch.Generator().manual_seed(2)).requires_grad_(),
                                     cache.coords_at(2), 2, cache)
            kernel = random_kernel(kernel_size, stride, 3, 4, seed=kernel_size)
            out = sparse_conv3d(level, kernel, kernel_size, stride, transposed).feats
            grads = torch.autograd.grad(out.pow(2).sum(), [level.feats, kernel])
            results.append((out, *grads))
        for native, batched in zip(*results, strict=True):
            torch.testing.assert_close(batched, native, rtol=1e-12, atol=1e-12)


def test_batched_backward_passes_gradcheck():
    x = random_sparse(50, 2, tensor_stride=1, seed=8)
    kernel = random_kernel(3, 1, 2, 3, seed=8)

    def convolve(feats, kernel):
        return sparse_conv3d(SparseTensor(feats, x.coords, 1, CoordinateCache(backend="batched")), kernel, 3).feats

    assert torch.autograd.gradcheck(convolve, (x.feats, kernel), eps=1e-6, atol=1e-8)


def test_batched_bf16_takes_the_grouped_gemm_and_agrees_with_float32():
    # Channels in multiples of 8 in bf16: grouped_mm over the unpadded pairs (runs on the CPU too).
    x = random_sparse(300, 8, tensor_stride=1, seed=9)
    kernel = random_kernel(3, 1, 8, 16, seed=9).detach().float()
    kernel_map = x.cache.kernel_map(1, 1, 3)
    feats = x.feats.detach().float()
    reference = gather_matmul_scatter(feats, kernel, kernel_map, Workspace())
    products, order = batched_products(feats.bfloat16(), kernel.bfloat16(), kernel_map)
    assert products.shape == (sum(kernel_map.segment_rows()[1]), 16)  # not padded: the grouped GEMM
    grouped = gather_matmul_scatter(feats.bfloat16(), kernel.bfloat16(), kernel_map, Workspace(), batched=True)
    torch.testing.assert_close(grouped.float(), reference, rtol=0.02, atol=0.05 * reference.abs().max().item())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = sparse_conv3d(SparseTensor(feats, x.coords, 1, CoordinateCache(backend="batched")), kernel, 3)
    assert autocast.feats.dtype == torch.bfloat16
    torch.testing.assert_close(autocast.feats.float(), grouped.float())


@pytest.fixture
def call_rows(monkeypatch) -> list[int]:
    """The row count of every oneDNN matmul call made while the test runs, in order."""
    recorded: list[int] = []
    linear = torch.ops.mkldnn._linear_pointwise

    def recording(rows, *args):
        recorded.append(len(rows))
        return linear(rows, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", recording)
    return recorded


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")
def test_onednn_matmuls_give_the_float64_convolution_and_its_gradients(monkeypatch, call_rows):
    # Every CPU float32 matmul forced onto oneDNN, in blocks of 16 rows (so that a product spans several calls, the
    # identity offset accumulates block by block, and counts of 9-15 rows are called rounded up), against the same
    # convolutions in float64.
    monkeypatch.setattr(conv_module, "ONEDNN_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(conv_module, "ONEDNN_BYTES_PER_CALL", 4 * 6 * 16)
    monkeypatch.setattr(conv_module, "_cpu_matmul", "onednn")  # whatever this CPU's rule says
    fine = random_sparse(90, 5, tensor_stride=1, seed=31)
    for kernel_size, stride, transposed in ((3, 1, False), (2, 2, False), (2, 2, True)):
        results = {}
        for dtype in (torch.float64, torch.float32):
            cache = CoordinateCache()
            level = SparseTensor(fine.feats.detach().to(dtype).requires_grad_(), fine.coords, 1, cache)
            if transposed:
                coarse = torch.randn(len(cache.coords_at(2)), 5, dtype=torch.float64,
                                     generator=torch.Generator().manual_seed(3))
                level = SparseTensor(coarse.to(dtype).requires_grad_(), cache.coords_at(2), 2, cache)
            kernel = random_kernel(kernel_size, stride, 5, 6, seed=kernel_size).detach().to(dtype).requires_grad_()
            call_rows.clear()
            out = sparse_conv3d(level, kernel, kernel_size, stride, transposed).feats
            grads = torch.autograd.grad(out.pow(2).sum(), [level.feats, kernel])
            results[dtype] = (out, *grads, list(call_rows))
        segments = len(cache.kernel_map(1, stride, kernel_size).segments)
        *expected, float64_calls = results[torch.float64]
        *actual, float32_calls = results[torch.float32]
        assert float64_calls == [] and len(float32_calls) >= 2 * segments  # forward and input gradient
        # Only row counts of the short ladder: a new sweep brings no new oneDNN kernel shapes.
        assert all(conv_module.onednn_call_rows(rows) == rows for rows in float32_calls)
        sizes = cache.kernel_map(1, stride, kernel_size).segment_rows()[1]
        assert any(size % 16 in (9, 11, 13, 15) for size in sizes)  # so some calls were rounded up
        for value, reference in zip(actual, expected, strict=True):
            torch.testing.assert_close(value.double(), reference, rtol=1e-5, atol=1e-5)


def test_onednn_row_counts_are_rounded_up_to_three_significant_bits():
    # A new sweep must not mean new oneDNN kernels: every count maps to one of 4 call sizes per octave.
    calls = [conv_module.onednn_call_rows(rows) for rows in range(1, 5000)]
    assert calls[:8] == list(range(1, 9))
    assert all(rows <= call <= 1.25 * rows for rows, call in enumerate(calls, start=1))
    assert sorted(set(calls[1023:4095])) == [1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")
def test_onednn_matmul_pads_its_calls_from_spare_rows_or_an_earlier_window(monkeypatch, call_rows):
    # 16-row blocks (6 output channels): 45 rows are two full blocks and 13 rows called as 14. With spare rows
    # in the source the call reads one stale row past the end; without, it starts one row early; a block
    # with neither (13 rows alone) goes to MKL. Values and sums against float64 in every case.
    monkeypatch.setattr(conv_module, "ONEDNN_BYTES_PER_CALL", 4 * 6 * 16)
    generator = torch.Generator().manual_seed(5)
    source = torch.randn(48, 4, generator=generator)
    kernel = torch.randn(4, 6, generator=generator)
    start = torch.randn(48, 6, generator=generator)
    for rows, spare, expected_calls in ((45, 3, [16, 16, 14]), (45, 0, [16, 16, 14]), (13, 0, [])):
        call_rows.clear()
        rows_source = source[:rows + spare]
        for accumulate in (False, True):
            out = start[:rows].clone()
            conv_module.onednn_matmul_into(rows_source, kernel, out, accumulate=accumulate)
            expected = source[:rows].double() @ kernel.double() + (start[:rows].double() if accumulate else 0)
            torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
        assert call_rows == expected_calls * 2


def test_onednn_takes_only_cpu_float32_matmuls_big_enough_to_pay_for_its_call(monkeypatch):
    monkeypatch.setattr(conv_module, "_cpu_matmul", "onednn")
    one_thread_rows = conv_module.onednn_min_rows(torch.zeros(1), 64, 64) / torch.get_num_threads()
    assert one_thread_rows == conv_module.ONEDNN_MIN_MULTIPLY_ADDS / (64 * 64)
    narrow = conv_module.onednn_min_rows(torch.zeros(1), 16, 64) / torch.get_num_threads()
    assert narrow == 2 * conv_module.ONEDNN_MIN_MULTIPLY_ADDS / (16 * 64)  # 16 channels pay later
    assert conv_module.onednn_min_rows(torch.zeros(1, dtype=torch.float64), 64, 64) == float("inf")
    assert conv_module.onednn_min_rows(torch.zeros(1, dtype=torch.bfloat16), 64, 64) == float("inf")
    monkeypatch.setattr(conv_module, "_cpu_matmul", "mkl")  # chosen by the user
    assert conv_module.onednn_min_rows(torch.zeros(1), 64, 64) == float("inf")


CPUINFO = "processor\t: {n}\nvendor_id\t: {vendor}\nflags\t\t: fpu sse2 avx2 {extra}\n\n"


@pytest.mark.parametrize(("vendor", "extra", "expected"), [
    ("AuthenticAMD", "avx512f avx512bw", True),  # MKL's sgemm runs AVX2 code there, oneDNN AVX-512
    ("GenuineIntel", "avx512f avx512bw", False),  # both run AVX-512: oneDNN's extra copy only costs
    ("AuthenticAMD", "avx512_bf16", False),  # no avx512f: the same instructions for both
    ("HygonGenuine", "avx512f", True),
])
def test_the_auto_rule_reads_the_cpu_vendor_and_avx512(tmp_path, vendor, extra, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(CPUINFO.format(n=n, vendor=vendor, extra=extra) for n in range(2)))
    assert conv_module.cpu_prefers_onednn.__wrapped__(str(cpuinfo)) is expected
    assert conv_module.cpu_prefers_onednn.__wrapped__(str(tmp_path / "missing")) is False


def test_the_cpu_matmul_choice_overrides_the_rule_and_rejects_unknown_names(monkeypatch):
    monkeypatch.setattr(conv_module, "_cpu_matmul", "auto")
    available = conv_module.onednn_linear_available()
    assert conv_module.onednn_matmuls() is (available and conv_module.cpu_prefers_onednn())
    conv_module.set_cpu_matmul("mkl")
    assert conv_module.onednn_matmuls() is False
    conv_module.set_cpu_matmul("onednn")
    assert conv_module.onednn_matmuls() is available
    with pytest.raises(ValueError, match="cpu_matmul must be one of"):
        conv_module.set_cpu_matmul("fastest")
    assert conv_module._cpu_matmul == "onednn"  # a refused choice changes nothing


def test_without_onednn_s_linear_every_matmul_stays_on_mkl(monkeypatch):
    monkeypatch.setattr(conv_module, "_cpu_matmul", "onednn")
    monkeypatch.setattr(conv_module, "onednn_linear_available", lambda: False)
    assert conv_module.onednn_matmuls() is False
    assert conv_module.onednn_min_rows(torch.zeros(1), 256, 256) == float("inf")
