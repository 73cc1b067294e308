"""Inference-time speed-ups that keep the numbers: BatchNorm folding, symmetric-padding folding, channels-last.

:func:`optimize_for_inference` returns an optimised copy of a model (or, with ``inplace=True``, optimises the model
itself; doing that twice is harmless) for CPU/GPU inference (eval mode only):

* every Conv → BatchNorm pair of the EfficientNet extractors becomes one convolution with a bias
  (``w' = w·γ/√(σ²+ε)``, ``b' = β − μ·γ/√(σ²+ε)``);
* TF-"same" padding that happens to be symmetric is moved into the convolution's own ``padding`` (one tensor
  copy less per layer); asymmetric padding (stride-2 layers) is kept as is;
* weights and inputs use the channels-last memory format, which PyTorch's CPU (oneDNN) and cuDNN
  convolutions run faster;
* SiLU activations run in place (one large allocation less per activation);
* on the CPU, a batch is run in micro-batches of ``cpu_micro_batch`` faces: the early layers at 380 px make
  activations of tens of MB per face, so small micro-batches stay in the CPU caches and run faster per face
  than one large batch (see ``benchmarks/model_forward.py``).

The result matches the original to float rounding (tested: ≤ 1e-4 on logits). Training must use the original.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cevit.models.cross_efficient_vit import CrossEfficientViT
from cevit.models.efficientnet import EfficientNetFeatures

__all__ = ["fold_conv_bn", "optimize_for_inference", "InferenceModel"]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (in eval statistics) into ``conv`` in place; the caller replaces ``bn`` by Identity."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.bias = nn.Parameter(bias.detach().clone())


def _fold_padding(conv: nn.Conv2d) -> None:
    pad = getattr(conv, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom and conv.padding == (0, 0):
            conv.padding = (top, left)
            conv.static_padding = nn.Identity()


def _optimize_extractor(net: EfficientNetFeatures) -> None:
    pairs = [(net, "_conv_stem", "_bn0")]
    for block in net._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    if net.include_head:
        pairs.append((net, "_conv_head", "_bn1"))
    for owner, conv_name, bn_name in pairs:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        if isinstance(bn, nn.BatchNorm2d):  # not folded yet (optimising a model twice in place changes nothing)
            fold_conv_bn(conv, bn)
            setattr(owner, bn_name, nn.Identity())
        _fold_padding(conv)


class InferenceModel(nn.Module):
    """Wraps an optimised model: converts inputs to its memory format and runs CPU micro-batches."""

    def __init__(self, model: CrossEfficientViT, *, channels_last: bool, cpu_micro_batch: int) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.cpu_micro_batch = cpu_micro_batch
        self.config = model.config
        self.preprocessing = model.preprocessing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        step = self.cpu_micro_batch
        if x.device.type != "cpu" or step <= 0 or x.shape[0] <= step:
            return self.model(x)
        return torch.cat([self.model(x[i : i + step]) for i in range(0, x.shape[0], step)], dim=0)


def optimize_for_inference(
    model: CrossEfficientViT, *, channels_last: bool = True, cpu_micro_batch: int = 2, inplace: bool = False
) -> InferenceModel:
    """An eval-mode, inference-only copy of ``model`` (BatchNorm folded, channels-last, in-place SiLU).

    ``inplace=True`` changes ``model`` itself instead of a copy (for a model nobody else holds, such as one that
    :func:`cevit.inference.pipeline.load_model` has just loaded: the copy took 0.2 s of its 0.9 s).
    """
    fast = (model if inplace else copy.deepcopy(model)).eval()
    for embedder in (fast.sm_image_embedder, fast.lg_image_embedder):
        _optimize_extractor(embedder.efficient_net)
    for module in list(fast.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.SiLU):
                setattr(module, name, nn.SiLU(inplace=True))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return InferenceModel(fast, channels_last=channels_last, cpu_micro_batch=cpu_micro_batch)
