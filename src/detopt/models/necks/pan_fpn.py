"""PAN-FPN neck (YOLOv8 style): a top-down path then a bottom-up path, C2f blocks at each merge."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detopt.models.layers import C2f, Conv


class PANFPN(nn.Module):
    """Fuses ``L`` levels (finest first). Top-down: upsample ×2, concatenate with the finer level,
    C2f. Bottom-up: stride-2 conv, concatenate with the top-down output of the coarser level, C2f.

    Args:
        in_channels: channels of the input levels, finest first.
        out_channels: channels of the output levels, finest first (the coarsest output keeps
            ``in_channels[-1]`` when equal: YOLOv8 fuses into the backbone's C5 width).
        depth: C2f repeats.

    ``forward``: ``[P_1..P_L]`` -> ``[N_1..N_L]`` with the same spatial sizes.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], depth: int = 1) -> None:
        super().__init__()
        n = len(in_channels)
        if n < 2 or len(out_channels) != n:
            raise ValueError(
                f"PANFPN needs >= 2 levels and matching widths, got {in_channels}, {out_channels}"
            )
        self.out_channels = tuple(out_channels)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        # top-down: level i (from n-2 down to 0) fuses upsampled td[i+1] with P_i
        td_ch = [0] * n
        td_ch[n - 1] = in_channels[n - 1]
        self.top_down = nn.ModuleList()
        for i in range(n - 2, -1, -1):
            td_ch[i] = out_channels[i]
            self.top_down.append(C2f(td_ch[i + 1] + in_channels[i], td_ch[i], depth))
        # bottom-up: level i (from 1 to n-1) fuses down(out[i-1]) with td[i]
        self.down = nn.ModuleList()
        self.bottom_up = nn.ModuleList()
        for i in range(1, n):
            self.down.append(Conv(out_channels[i - 1], out_channels[i - 1], 3, 2))
            self.bottom_up.append(C2f(out_channels[i - 1] + td_ch[i], out_channels[i], depth))

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        n = len(feats)
        td = [None] * n
        td[n - 1] = feats[n - 1]
        for k, i in enumerate(range(n - 2, -1, -1)):
            td[i] = self.top_down[k](torch.cat((self.up(td[i + 1]), feats[i]), 1))
        out = [td[0]]
        for k, i in enumerate(range(1, n)):
            out.append(self.bottom_up[k](torch.cat((self.down[k](out[-1]), td[i]), 1)))
        return out
