"""MinkUNet: the sparse-voxel UNet of MinkowskiEngine / torchsparse / SPVNAS, on our sparse layers.

Stem (two 3^3 convs) -> four encoder stages (2^3 stride-2 conv + residual blocks) -> four decoder stages
(2^3 transposed conv back to the encoder level's exact voxels, concatenation with its features, residual
blocks). ``channels`` lists the widths: stem, encoder 1-4, decoder 1-4 (nine numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from clip_seg3d_ros.sparse import SparseBatchNorm, SparseConv3d, SparseReLU, SparseTensor, Workspace, cat_features

MINKUNET_PRESETS: dict[str, dict] = {
    # Trains in seconds on a laptop CPU; for tests, the synthetic world and quick experiments.
    "small": {"channels": (16, 16, 32, 48, 64, 64, 48, 32, 32), "blocks_per_stage": 1},
    # Half width of the standard network.
    "half": {"channels": (16, 16, 32, 64, 128, 128, 64, 48, 48), "blocks_per_stage": 2},
    # The 1.0x MinkUNet of torchsparse / SPVNAS (cr = 1.0) used on SemanticKITTI and nuScenes.
    "standard": {"channels": (32, 32, 64, 128, 256, 256, 128, 96, 96), "blocks_per_stage": 2},
}


class ConvBlock(nn.Sequential):
    """conv -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 transposed: bool = False) -> None:
        super().__init__(
            SparseConv3d(in_channels, out_channels, kernel_size, stride, transposed=transposed),
            SparseBatchNorm(out_channels),
            SparseReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3^3 submanifold convs with a (1x1x1 projected, when widths differ) shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            SparseConv3d(in_channels, out_channels, 3),
            SparseBatchNorm(out_channels),
            SparseReLU(inplace=True),
            SparseConv3d(out_channels, out_channels, 3),
            SparseBatchNorm(out_channels),
        )
        if in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(SparseConv3d(in_channels, out_channels, 1), SparseBatchNorm(out_channels))
        self.relu = SparseReLU(inplace=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        main = self.main(x)
        return self.relu(main.with_feats(main.feats + self.shortcut(x).feats))


def _residual_stage(in_channels: int, out_channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(
        ResidualBlock(in_channels, out_channels),
        *[ResidualBlock(out_channels, out_channels) for _ in range(blocks - 1)],
    )


class MinkUNet(nn.Module):
    """Sparse UNet mapping voxel features (V, in_channels) to voxel features (V, channels[-1]).

    Input and output share voxels (stride 1). Voxels of all levels are key-sorted, which keeps outputs
    independent of the input's point order.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], blocks_per_stage: int = 2) -> None:
        super().__init__()
        if len(channels) != 9:
            raise ValueError(f"MinkUNet needs 9 channel widths (stem, 4 encoder, 4 decoder), got {len(channels)}")
        if blocks_per_stage < 1:
            raise ValueError("blocks_per_stage must be at least 1")
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.blocks_per_stage = blocks_per_stage
        c = self.channels
        self.stem = nn.Sequential(ConvBlock(in_channels, c[0]), ConvBlock(c[0], c[0]))
        self.encoder = nn.ModuleList(
            nn.Sequential(
                ConvBlock(c[i], c[i], kernel_size=2, stride=2),
                _residual_stage(c[i], c[i + 1], blocks_per_stage),
            )
            for i in range(4)
        )
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(4):
            coarse = c[4 + i]  # decoder input width: the bottleneck (c[4]) or the previous decoder stage
            skip = c[3 - i]  # width of the encoder level being restored
            self.up.append(ConvBlock(coarse, c[5 + i], kernel_size=2, stride=2, transposed=True))
            self.decoder.append(_residual_stage(c[5 + i] + skip, c[5 + i], blocks_per_stage))
        # The convolutions' scratch memory, kept from one pass to the next (not a parameter, not saved).
        self.workspace = Workspace()

    @property
    def out_channels(self) -> int:
        return self.channels[-1]

    def forward(self, x: SparseTensor) -> SparseTensor:
        x.cache.workspace = self.workspace
        skips = [self.stem(x)]
        for stage in self.encoder:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for up, decode in zip(self.up, self.decoder, strict=True):
            y = decode(cat_features(up(y), skips.pop()))
        return y
