"""Per-face heat maps: where in the face crop the evidence for P(fake) lies.

Two methods, both explaining the model's fake logit (the sum of the two branch heads; the calibration
temperature rescales it and so changes nothing in a map):

* ``"gradcam"`` — Grad-CAM (R. R. Selvaraju et al., ICCV 2017) on the output of the small-patch branch's
  EfficientNet (its B0 trunk + conv head, 1280 channels at stride 32): the feature maps weighted by their
  spatially averaged gradient, summed, ReLU. Computed with Captum's ``LayerGradCam`` (the ``explain`` extra;
  it installs beside the CPU torch without torchvision).
* ``"attention"`` — gradient-weighted attention rollout over the CLS tokens of both transformer branches
  (after H. Chefer, S. Gur, L. Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
  Encoder-Decoder Transformers", ICCV 2021): every attention map is weighted by its gradient (head mean of
  ``(∂logit/∂A ⊙ A)⁺``) and rolled out through the network in forward order — self-attention within each
  branch (``R ← R + Ā·R``), and the cross step in which each branch's CLS attends to [itself, the other
  branch's patch tokens]. The relevance of the large-patch branch's patch tokens to both CLS tokens (each head
  reads one; the sm CLS reaches them through cross-attention) is mapped back to the pixels each token covers
  (64 px cells at 224 px input). The small-patch branch's own patch tokens are left out of the map: at 224 px
  they are 2×2 quadrants of 128 px that meet at the face's centre (one of them mostly zero padding), so they
  cannot localise; adding them (summed or per pixel area) lowered the pointing game on self-blended faces
  from 0.83 to 0.35-0.68 (40 faces, ``benchmarks/explain_pointing.py`` setup).
  Hand-written: Captum has no attention-rollout attribution, and this model's cross-attention (a CLS token
  attending to the *other* branch's tokens) needs its own rollout rule. The attention probabilities come
  from :class:`~cevit.models.cross_efficient_vit.Attention`'s ``keep_attention`` switch, set only for the
  duration of one call.

Every map is a float32 array of the model's input crop size (S, S) — the resized face crop the pipeline
scores —, finite and min-max normalised to [0, 1] (a constant map, no evidence anywhere, is all zeros). Nothing here runs unless asked for: the analysis path computes no gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cevit.errors import ConfigError
from cevit.models.cross_efficient_vit import Attention, CrossEfficientViT
from cevit.preprocess import FacePreprocessor, Preprocessing

__all__ = [
    "Method",
    "METHODS",
    "DEFAULT_METHOD",
    "FaceExplanation",
    "Explanations",
    "check_method",
    "normalise",
    "grad_cam",
    "attention_rollout",
    "rollout_relevance",
    "face_heatmaps",
]

log = logging.getLogger(__name__)

Method = Literal["gradcam", "attention"]
METHODS: tuple[str, ...] = ("gradcam", "attention")
#: The default, chosen by measurement (benchmarks/explain_pointing.py; see the README, "Explanations").
DEFAULT_METHOD: Method = "gradcam"


@dataclass(frozen=True, kw_only=True)
class FaceExplanation:
    """The heat map of one scored face, over the model's input crop of that face."""

    frame_index: int
    face_index: int
    score: float
    heatmap: np.ndarray  # (S, S) float32 in [0, 1]
    crop: np.ndarray  # (S, S, 3) uint8 RGB: the crop the model scored


@dataclass(frozen=True, kw_only=True)
class Explanations:
    """Heat maps of one analysed item, plus the frame to annotate (image: the image; video: the most suspicious
    sampled frame), possibly downscaled by ``frame_scale`` (frame pixels per original pixel)."""

    method: str
    faces: tuple[FaceExplanation, ...]
    frame: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    frame_index: int | None = None
    frame_scale: float = 1.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """The report's ``explanations`` block (no arrays): the method, and per face where its map peaks."""
        faces = []
        for f in self.faces:
            y, x = np.unravel_index(int(np.argmax(f.heatmap)), f.heatmap.shape)
            faces.append({"frame_index": int(f.frame_index), "face_index": int(f.face_index),
                          "peak": [int(x), int(y)], "crop_size": int(f.heatmap.shape[0])})  # fmt: skip
        return {"method": self.method, "target": "fake logit", "faces": faces, "time": round(float(self.seconds), 4)}


def check_method(method: str | bool | None) -> Method:
    """``True``/``None`` → the default method; an unknown name raises ConfigError."""
    if method is True or method is None:
        return DEFAULT_METHOD
    if method not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; use one of {', '.join(METHODS)}")
    return method  # type: ignore[return-value]


def normalise(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B, H, W) → float32 in [0, 1], each map min-max scaled; non-finite values count as 0 and a constant map
    (no evidence anywhere, e.g. Grad-CAM's ReLU removed everything) becomes all zeros."""
    arr = np.asarray(maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else maps, dtype=np.float32)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    flat = arr.reshape(arr.shape[0], -1)
    lo, span = flat.min(axis=1).reshape(-1, 1, 1), np.ptp(flat, axis=1).reshape(-1, 1, 1)
    out = np.divide(arr - lo, span, out=np.zeros_like(arr), where=span > 1e-12)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _unwrap(model: nn.Module) -> CrossEfficientViT:
    """The CrossEfficientViT inside an inference wrapper (cevit.models.optimize.InferenceModel) or itself."""
    net = getattr(model, "model", model)
    if not isinstance(net, CrossEfficientViT):
        raise ConfigError(f"explanations need a CrossEfficientViT, got {type(net).__name__}")
    return net


def grad_cam(
    forward: Callable[[torch.Tensor], torch.Tensor], layer: nn.Module, x: torch.Tensor, *, size: tuple[int, int]
) -> np.ndarray:
    """Grad-CAM of ``forward(x)[:, 0]`` at ``layer``'s output, upsampled (bilinear) to ``size``: (B, H, W) in [0, 1].

    Generic over the network (the model's sm extractor in :func:`face_heatmaps`, any module in tests).
    """
    try:
        from captum.attr import LayerGradCam
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError("Grad-CAM needs captum: pip install 'cevit[explain]' (or use method 'attention')") from exc

    # x needs no gradient: Captum differentiates with respect to the layer's output only, so nothing below the
    # layer is recorded for backward (measured: about a third less time per face on the default model)
    with torch.enable_grad():
        cam = LayerGradCam(forward, layer).attribute(x.detach(), target=0, relu_attributions=True)  # (B, 1, h, w)
    cam = F.interpolate(cam.detach().float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalise(cam)


def _attention_modules(net: CrossEfficientViT) -> list[tuple[str, Attention]]:
    """Every attention of the encoder in forward order, tagged "sm"/"lg" (self) or "sm_cls"/"lg_cls" (cross)."""
    order: list[tuple[str, Attention]] = []
    for sm_enc, lg_enc, cross in net.multi_scale_encoder.layers:
        order += [("sm", layer[0].fn) for layer in sm_enc.layers]
        order += [("lg", layer[0].fn) for layer in lg_enc.layers]
        for sm_attend_lg, lg_attend_sm in cross.layers:
            order += [("sm_cls", sm_attend_lg.fn.fn), ("lg_cls", lg_attend_sm.fn.fn)]
    return order


def rollout_relevance(steps: Sequence[tuple[str, torch.Tensor]], *, n_sm: int, n_lg: int) -> torch.Tensor:
    """Roll gradient-weighted attention maps out over the joint tokens [sm CLS, sm patches, lg CLS, lg patches].

    ``steps``: (kind, Ā) in forward order, Ā the head-averaged positive gradient × attention (B, N, M): "sm"
    (B, 1+n_sm, 1+n_sm), "lg" (B, 1+n_lg, 1+n_lg), "sm_cls" (B, 1, 1+n_lg: [sm CLS, lg patches]), "lg_cls"
    (B, 1, 1+n_sm: [lg CLS, sm patches]). Returns the relevance of every joint token to the two CLS tokens
    (the sum of both rows of R), (B, 2 + n_sm + n_lg).
    """
    t = 2 + n_sm + n_lg
    sm, lg = slice(0, 1 + n_sm), slice(1 + n_sm, t)
    sm_cls, lg_cls = 0, 1 + n_sm
    sm_patch, lg_patch = slice(1, 1 + n_sm), slice(2 + n_sm, t)
    b = steps[0][1].shape[0] if steps else 1
    r = torch.eye(t, dtype=torch.float64).expand(b, t, t).clone()
    for kind, a in steps:
        a = a.to(torch.float64)
        if kind in ("sm", "lg"):
            rows = sm if kind == "sm" else lg
            r[:, rows] = r[:, rows] + a @ r[:, rows]
        elif kind == "sm_cls":  # sm CLS attends to [itself, lg patches]
            r[:, sm_cls] = r[:, sm_cls] + a[:, 0, :1] * r[:, sm_cls] + (a[:, 0, 1:, None] * r[:, lg_patch]).sum(1)
        elif kind == "lg_cls":  # lg CLS attends to [itself, sm patches]
            r[:, lg_cls] = r[:, lg_cls] + a[:, 0, :1] * r[:, lg_cls] + (a[:, 0, 1:, None] * r[:, sm_patch]).sum(1)
        else:
            raise ValueError(f"unknown rollout step {kind!r}")
    return r[:, sm_cls] + r[:, lg_cls]


def _tokens_to_pixels(values: torch.Tensor, embedder: nn.Module, size: int) -> torch.Tensor:
    """Patch-token values (B, g*g) → (B, size, size) over the pixels each token covers (bilinear)."""
    g = embedder.patch_grid
    grid, padded = embedder.efficient_net.out_grid, embedder.grid_padded
    extent = max(size, int(round(padded * size / grid)))  # the zero-padded grid reaches past the image
    maps = values.reshape(-1, 1, g, g).float()
    return F.interpolate(maps, size=(extent, extent), mode="bilinear", align_corners=False)[:, 0, :size, :size]


def attention_rollout(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Gradient-weighted attention rollout of the fake logit for inputs ``x`` (B, 3, S, S): (B, S, S) in [0, 1]."""
    net = _unwrap(model)
    order = _attention_modules(net)
    for _, module in order:
        module.keep_attention = True
    try:
        with torch.no_grad():  # the CNN extractors: no gradient needed below the token sequences
            sm_tokens, lg_tokens = (t.requires_grad_(True) for t in net.embed(x))
        with torch.enable_grad():
            sm_tokens, lg_tokens = net.multi_scale_encoder(sm_tokens, lg_tokens)
            logit = net.forward_head((sm_tokens[:, 0], lg_tokens[:, 0]))[:, 0]  # = net(x)[:, 0]
            attns = [module.attention for _, module in order]
            grads = torch.autograd.grad(logit.sum(), attns)
        steps = [(kind, (g * a).clamp(min=0).mean(1).detach()) for (kind, _), a, g in zip(order, attns, grads)]
    finally:
        for _, module in order:
            module.keep_attention = False
            module.__dict__.pop("attention", None)
    n_sm, n_lg = net.sm_image_embedder.num_patches, net.lg_image_embedder.num_patches
    rel = rollout_relevance(steps, n_sm=n_sm, n_lg=n_lg)
    return normalise(_tokens_to_pixels(rel[:, 2 + n_sm :], net.lg_image_embedder, net.config.image_size))


def face_heatmaps(
    model: nn.Module, crops: Sequence[np.ndarray], *, preprocessing: Preprocessing, method: str = DEFAULT_METHOD,
    device: torch.device | str = "cpu", batch_size: int = 4,
) -> list[np.ndarray]:  # fmt: skip
    """Heat maps (S, S) float32 in [0, 1] for resized face crops (S, S, 3) uint8 RGB, ``batch_size`` at a time.

    ``model``: a CrossEfficientViT or the pipeline's inference wrapper around one (its folded weights give the
    same maps). The model is left in eval mode, its parameters untouched.
    """
    method = check_method(method)
    net = _unwrap(model)
    if net.training:
        raise ConfigError("explanations need the model in eval mode (call model.eval())")
    out: list[np.ndarray] = []
    size = net.config.image_size
    preprocessor = FacePreprocessor(spec=preprocessing)
    for start in range(0, len(crops), batch_size):
        x = preprocessor.to_tensor(list(crops[start : start + batch_size])).to(device)
        if method == "gradcam":
            maps = grad_cam(net, net.sm_image_embedder.efficient_net, x, size=(size, size))
        else:
            maps = attention_rollout(net, x)
        out.extend(maps)
    return out
