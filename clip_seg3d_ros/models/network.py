"""The 3D network: MinkUNet backbone + projection into CLIP's joint embedding space."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from torch import nn

from clip_seg3d_ros.models.classifier import CLIP_TEMPERATURE
from clip_seg3d_ros.models.minkunet import MINKUNET_PRESETS, MinkUNet
from clip_seg3d_ros.sparse import SparseTensor


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network and feed it; saved in every checkpoint.

    Input features per voxel: the mean x, y, z in metres and, when ``use_intensity``, the mean intensity
    divided by ``intensity_scale`` (1.0 for SemanticKITTI's [0, 1] remission, 255 for nuScenes).
    """

    channels: tuple[int, ...] = MINKUNET_PRESETS["small"]["channels"]
    blocks_per_stage: int = MINKUNET_PRESETS["small"]["blocks_per_stage"]
    preset: str = "small"
    embed_dim: int = 512
    voxel_size: float = 0.05
    use_intensity: bool = True
    intensity_scale: float = 1.0
    temperature: float = CLIP_TEMPERATURE  # of the text-embedding head

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> ModelConfig:
        if preset not in MINKUNET_PRESETS:
            raise ValueError(f"unknown MinkUNet preset {preset!r}; choose one of {sorted(MINKUNET_PRESETS)}")
        return cls(preset=preset, **MINKUNET_PRESETS[preset], **overrides)

    @property
    def in_channels(self) -> int:
        return 4 if self.use_intensity else 3

    def to_dict(self) -> dict:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}")
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(int(c) for c in values["channels"])
        return cls(**values)


class PointSegmentationNet(nn.Module):
    """Sparse voxels -> one embedding per voxel in CLIP's space (unnormalised; the classifier normalises)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = MinkUNet(config.in_channels, config.channels, config.blocks_per_stage)
        # A pointwise linear map, as OpenScene's distilled 3D network uses: the backbone does the spatial work.
        self.projection = nn.Linear(self.backbone.out_channels, config.embed_dim)

    def forward(self, x: SparseTensor):
        return self.projection(self.backbone(x).feats)
