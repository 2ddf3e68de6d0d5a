"""CSP-Darknet with C2f stages (YOLOv8 backbone)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from detopt.models.layers import SPPF, C2f, Conv


class CSPDarknet(nn.Module):
    """Stem (stride 2) then four stages, each a stride-2 conv and a C2f block; SPPF at the end.

    Args:
        channels: output channels of the stem and of the four stages (5 values).
        depths: C2f repeats of the four stages.

    ``forward``: ``[B, 3, H, W] -> [C2, C3, C4, C5]`` at strides 4, 8, 16, 32
    (``channels[1:]`` channels each).
    """

    strides = (4, 8, 16, 32)

    def __init__(self, channels: Sequence[int], depths: Sequence[int]) -> None:
        super().__init__()
        if len(channels) != 5 or len(depths) != 4:
            raise ValueError(f"CSPDarknet needs 5 channels and 4 depths, got {channels}, {depths}")
        self.out_channels = tuple(channels[1:])
        self.stem = Conv(3, channels[0], 3, 2)
        stages = []
        for i, n in enumerate(depths):
            layers = [
                Conv(channels[i], channels[i + 1], 3, 2),
                C2f(channels[i + 1], channels[i + 1], n, True),
            ]
            if i == 3:
                layers.append(SPPF(channels[4], channels[4]))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out
