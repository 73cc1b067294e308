"""EfficientNet-B0 feature extractors for the two branches of the Cross Efficient ViT.

EfficientNet: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019.
The MBConv blocks come from the ``efficientnet_pytorch`` package (0.7.1), whose module names are those of the
authors' Cross Efficient ViT checkpoint (``_conv_stem``, ``_bn0``, ``_blocks.N.*``, ``_conv_head``, ``_bn1``).

:class:`EfficientNetFeatures` keeps only what a branch uses: the stem, blocks ``0..last_block`` and, optionally,
the 1x1 conv head. Unused blocks are not built, so the module has no dead parameters. The network is built for
the model's input size, so TF-style "same" padding (asymmetric for stride-2 convolutions) is computed for the
feature-map sizes the extractor will really see.
"""

from __future__ import annotations

import math

import torch
from efficientnet_pytorch import EfficientNet
from torch import nn

__all__ = ["EfficientNetFeatures", "B0_NUM_BLOCKS"]

B0_NUM_BLOCKS = 16  # MBConv blocks in EfficientNet-B0


def _stride_of(block: nn.Module) -> int:
    stride = block._block_args.stride
    return int(stride[0] if isinstance(stride, (list, tuple)) else stride)


class EfficientNetFeatures(nn.Module):
    """EfficientNet-B0 trunk truncated after block ``last_block`` (0-based), with or without the conv head.

    Output: (B, out_channels, out_grid, out_grid) for an input (B, 3, image_size, image_size).
    """

    def __init__(
        self,
        *,
        image_size: int,
        last_block: int = B0_NUM_BLOCKS - 1,
        include_head: bool = True,
        drop_connect_rate: float = 0.2,
    ) -> None:
        super().__init__()
        if not 0 <= last_block < B0_NUM_BLOCKS:
            raise ValueError(f"last_block must be in [0, {B0_NUM_BLOCKS - 1}], got {last_block}")
        if include_head and last_block != B0_NUM_BLOCKS - 1:
            raise ValueError("the conv head needs all blocks (last_block=15)")
        net = EfficientNet.from_name("efficientnet-b0", image_size=image_size, include_top=False)
        self.image_size = image_size
        self.drop_connect_rate = drop_connect_rate
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = nn.ModuleList(list(net._blocks)[: last_block + 1])
        self.include_head = include_head
        if include_head:
            self._conv_head = net._conv_head
            self._bn1 = net._bn1
            self.out_channels = int(net._bn1.num_features)
        else:
            self.out_channels = int(self._blocks[-1]._block_args.output_filters)
        # Plain SiLU (= x * sigmoid(x), the swish of the paper) everywhere: same numbers as the package's
        # memory-efficient swish, but traceable/exportable and fused by PyTorch.
        self._swish = nn.SiLU()
        for block in self._blocks:
            block._swish = nn.SiLU()
        grid = math.ceil(image_size / 2)  # stem stride 2; static "same" padding gives ceil(n / stride)
        for block in self._blocks:
            grid = math.ceil(grid / _stride_of(block))
        self.out_grid = grid
        del net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))  # (B, 32, S/2, S/2)
        for idx, block in enumerate(self._blocks):
            # Drop-connect rate grows linearly with depth over the FULL B0 (as in the original network).
            rate = self.drop_connect_rate * idx / B0_NUM_BLOCKS if self.drop_connect_rate else None
            x = block(x, drop_connect_rate=rate)
        if self.include_head:
            x = self._swish(self._bn1(self._conv_head(x)))  # (B, 1280, S/32, S/32)
        return x
