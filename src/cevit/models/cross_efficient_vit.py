"""Cross Efficient ViT: two EfficientNet-B0 extractors feeding a two-scale Vision Transformer with cross-attention.

Paper: D. A. Coccomini, N. Messina, C. Gennaro, F. Falchi, "Combining EfficientNet and Vision Transformers for
Video Deepfake Detection", ICIAP 2022 (arXiv:2107.02612). The two-branch encoder follows CrossViT (C.-F. Chen,
Q. Fan, R. Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image Classification", ICCV 2021).

Structure (module names match the authors' checkpoint, so it converts by renaming nothing):

* ``sm_image_embedder`` — small-patch branch ("sm", fine detail): the full B0 trunk + conv head
  → (B, 1280, S/32, S/32); ``lg_image_embedder`` — large-patch branch ("lg", broad context): B0 stem +
  blocks 0–2 → (B, 24, S/4, S/4). Each embedder cuts its feature map into ``patch_size``² patches
  (``b c (h p1) (w p2) -> b (h w) (p1 p2 c)``), projects them linearly, prepends a learnable CLS token and adds
  learnable position embeddings. When the patch size does not divide the feature grid, the map is zero-padded
  at the bottom and right to the next multiple, so no feature is dropped.
* ``multi_scale_encoder`` — ``depth`` × [sm Transformer, lg Transformer, CrossTransformer]. Transformers are
  pre-norm (attention and feed-forward with residuals) with a final LayerNorm. In the cross step, the CLS token
  of each branch is projected to the other branch's width, LayerNorm-ed, attends to [itself, the other branch's
  patch tokens], and the result is projected back and added to the CLS (sm→lg first, then lg→sm).
* ``sm_mlp_head`` / ``lg_mlp_head`` — LayerNorm + Linear(dim → 1) on each CLS; the two logits are summed.

Inputs follow the model's preprocessing contract (:class:`cevit.preprocess.Preprocessing`, attached as
``model.preprocessing``); ``forward`` returns logits (B, 1), :meth:`CrossEfficientViT.predict_proba` P(fake).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops.layers.torch import Rearrange
from torch import nn

from cevit.errors import ConfigError
from cevit.models.efficientnet import B0_NUM_BLOCKS, EfficientNetFeatures
from cevit.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["CrossEfficientViTConfig", "CrossEfficientViT", "Attention", "Transformer", "CrossTransformer"]


@dataclass(frozen=True, kw_only=True)
class CrossEfficientViTConfig:
    """Architecture hyper-parameters of :class:`CrossEfficientViT` (all widths in channels)."""

    image_size: int = 380
    sm_dim: int = 64
    lg_dim: int = 128
    sm_patch_size: int = 4
    lg_patch_size: int = 16
    depth: int = 4
    sm_enc_depth: int = 2
    sm_enc_heads: int = 8
    sm_enc_dim_head: int = 64
    sm_enc_mlp_dim: int = 256
    lg_enc_depth: int = 2
    lg_enc_heads: int = 8
    lg_enc_dim_head: int = 64
    lg_enc_mlp_dim: int = 512
    cross_attn_depth: int = 2
    cross_attn_heads: int = 8
    cross_attn_dim_head: int = 64
    dropout: float = 0.1
    emb_dropout: float = 0.1
    lg_last_block: int = 2  # lg branch taps B0 after this block (0-based): 24 channels at stride 4
    drop_connect_rate: float = 0.2  # stochastic depth inside the B0 blocks (training only)

    def __post_init__(self) -> None:
        positive = [
            "image_size", "sm_dim", "lg_dim", "sm_patch_size", "lg_patch_size", "depth", "sm_enc_depth",
            "sm_enc_heads", "sm_enc_dim_head", "sm_enc_mlp_dim", "lg_enc_depth", "lg_enc_heads",
            "lg_enc_dim_head", "lg_enc_mlp_dim", "cross_attn_depth", "cross_attn_heads", "cross_attn_dim_head",
        ]  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model config: {name} must be a positive integer, got {value!r}")
        if self.image_size < 32:
            raise ConfigError(f"model config: image_size must be >= 32, got {self.image_size}")
        for name in ("dropout", "emb_dropout", "drop_connect_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model config: {name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.lg_last_block < B0_NUM_BLOCKS - 1:
            raise ConfigError(f"model config: lg_last_block must be in [0, {B0_NUM_BLOCKS - 2}]")


# --------------------------------------------------------------------------------------------------------------
# Blocks


class PreNorm(nn.Module):
    """LayerNorm on the query input only, then ``fn`` (context tokens, if any, enter un-normalised)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention; keys/values from ``context`` (default: x), optionally with x itself prepended.

    With ``keep_attention`` set (by :mod:`cevit.explain` only; a plain attribute, not in the state dict) the
    attention probabilities are computed explicitly and kept in ``self.attention`` (B, heads, N, M), part of the
    autograd graph; the output is the same up to float rounding. Off, the fused kernel runs as always.
    """

    keep_attention: bool = False

    def __init__(self, dim: int, *, heads: int, dim_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.attn_dropout = dropout
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)  # k first, v second
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, kv_include_self: bool = False
    ) -> torch.Tensor:
        context = x if context is None else context
        if kv_include_self:
            context = torch.cat((x, context), dim=1)  # (B, 1 + M, dim): [query token(s), context]
        b, n, _ = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, d)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        k = k.reshape(b, context.shape[1], self.heads, -1).transpose(1, 2)  # (B, h, M, d)
        v = v.reshape(b, context.shape[1], self.heads, -1).transpose(1, 2)
        if self.keep_attention:  # explanations (cevit.explain): the same attention, its probabilities kept
            attn = torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)  # (B, h, N, M)
            self.attention = attn
            out = F.dropout(attn, p=self.attn_dropout, training=self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, n, -1)  # (B, N, h*d)
        return self.to_out(out)


class Transformer(nn.Module):
    """Pre-norm Transformer encoder with a final LayerNorm."""

    def __init__(self, dim: int, *, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, Attention(dim, heads=heads, dim_head=dim_head, dropout=dropout)),
                    PreNorm(dim, FeedForward(dim, mlp_dim, dropout=dropout)),
                ]
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class ProjectInOut(nn.Module):
    """Run ``fn`` at another width: Linear in, ``fn``, Linear out (identities when the widths agree)."""

    def __init__(self, dim_in: int, dim_out: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        needs_projection = dim_in != dim_out
        self.project_in = nn.Linear(dim_in, dim_out) if needs_projection else nn.Identity()
        self.project_out = nn.Linear(dim_out, dim_in) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return self.project_out(self.fn(self.project_in(x), **kwargs))


class CrossTransformer(nn.Module):
    """Each branch's CLS token attends to [its projected self, the other branch's patch tokens]."""

    def __init__(self, *, sm_dim: int, lg_dim: int, depth: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    ProjectInOut(sm_dim, lg_dim, PreNorm(lg_dim, Attention(lg_dim, heads=heads, dim_head=dim_head, dropout=dropout))),
                    ProjectInOut(lg_dim, sm_dim, PreNorm(sm_dim, Attention(sm_dim, heads=heads, dim_head=dim_head, dropout=dropout))),
                ]
            )
            for _ in range(depth)
        )  # fmt: skip

    def forward(self, sm_tokens: torch.Tensor, lg_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sm_cls, sm_patch = sm_tokens[:, :1], sm_tokens[:, 1:]  # (B, 1, sm_dim), (B, N_sm, sm_dim)
        lg_cls, lg_patch = lg_tokens[:, :1], lg_tokens[:, 1:]  # (B, 1, lg_dim), (B, N_lg, lg_dim)
        for sm_attend_lg, lg_attend_sm in self.layers:
            sm_cls = sm_attend_lg(sm_cls, context=lg_patch, kv_include_self=True) + sm_cls
            lg_cls = lg_attend_sm(lg_cls, context=sm_patch, kv_include_self=True) + lg_cls
        return torch.cat((sm_cls, sm_patch), dim=1), torch.cat((lg_cls, lg_patch), dim=1)


class MultiScaleEncoder(nn.Module):
    def __init__(self, cfg: CrossEfficientViTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Transformer(cfg.sm_dim, depth=cfg.sm_enc_depth, heads=cfg.sm_enc_heads, dim_head=cfg.sm_enc_dim_head, mlp_dim=cfg.sm_enc_mlp_dim, dropout=cfg.dropout),
                    Transformer(cfg.lg_dim, depth=cfg.lg_enc_depth, heads=cfg.lg_enc_heads, dim_head=cfg.lg_enc_dim_head, mlp_dim=cfg.lg_enc_mlp_dim, dropout=cfg.dropout),
                    CrossTransformer(sm_dim=cfg.sm_dim, lg_dim=cfg.lg_dim, depth=cfg.cross_attn_depth, heads=cfg.cross_attn_heads, dim_head=cfg.cross_attn_dim_head, dropout=cfg.dropout),
                ]
            )
            for _ in range(cfg.depth)
        )  # fmt: skip

    def forward(self, sm_tokens: torch.Tensor, lg_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for sm_enc, lg_enc, cross_attend in self.layers:
            sm_tokens, lg_tokens = sm_enc(sm_tokens), lg_enc(lg_tokens)
            sm_tokens, lg_tokens = cross_attend(sm_tokens, lg_tokens)
        return sm_tokens, lg_tokens


class ImageEmbedder(nn.Module):
    """CNN features → patch tokens + CLS + position embeddings: (B, 3, S, S) → (B, 1 + num_patches, dim)."""

    def __init__(self, *, extractor: EfficientNetFeatures, dim: int, patch_size: int, emb_dropout: float) -> None:
        super().__init__()
        self.efficient_net = extractor
        self.patch_size = patch_size
        grid = extractor.out_grid
        self.grid_padded = math.ceil(grid / patch_size) * patch_size  # pad up, never truncate
        self.pad = self.grid_padded - grid
        self.patch_grid = self.grid_padded // patch_size
        self.num_patches = self.patch_grid**2
        patch_dim = extractor.out_channels * patch_size**2
        self.to_patch_embedding = nn.Sequential(
            Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size),
            nn.Linear(patch_dim, dim),
        )
        self.pos_embedding = nn.Parameter(torch.randn(1, self.num_patches + 1, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.dropout = nn.Dropout(emb_dropout)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.efficient_net(img)  # (B, C, G, G)
        if self.pad:
            x = F.pad(x, (0, self.pad, 0, self.pad))  # (B, C, G', G'), zeros at bottom/right
        x = self.to_patch_embedding(x)  # (B, N, dim)
        b, n, _ = x.shape
        assert n == self.num_patches, f"expected {self.num_patches} patch tokens, got {n}"
        cls = self.cls_token.expand(b, -1, -1)  # (B, 1, dim)
        x = torch.cat((cls, x), dim=1) + self.pos_embedding  # (B, 1 + N, dim)
        return self.dropout(x)


# --------------------------------------------------------------------------------------------------------------
# Model


class CrossEfficientViT(nn.Module):
    """Cross Efficient ViT deepfake classifier: (B, 3, S, S) → logits (B, 1); P(fake) = sigmoid(logit)."""

    def __init__(
        self,
        *,
        config: CrossEfficientViTConfig,
        preprocessing: Preprocessing | None = None,
        preset_name: str | None = None,
    ) -> None:
        super().__init__()
        cfg = config
        self.config = cfg
        self.preset_name = preset_name
        self.preprocessing = preprocessing or Preprocessing(input_size=cfg.image_size)
        if self.preprocessing.input_size != cfg.image_size:
            raise ConfigError(
                f"preprocessing.input_size {self.preprocessing.input_size} != model image_size {cfg.image_size}"
            )
        self.sm_image_embedder = ImageEmbedder(
            extractor=EfficientNetFeatures(image_size=cfg.image_size, include_head=True, drop_connect_rate=cfg.drop_connect_rate),
            dim=cfg.sm_dim, patch_size=cfg.sm_patch_size, emb_dropout=cfg.emb_dropout,
        )  # fmt: skip
        self.lg_image_embedder = ImageEmbedder(
            extractor=EfficientNetFeatures(image_size=cfg.image_size, last_block=cfg.lg_last_block, include_head=False, drop_connect_rate=cfg.drop_connect_rate),
            dim=cfg.lg_dim, patch_size=cfg.lg_patch_size, emb_dropout=cfg.emb_dropout,
        )  # fmt: skip
        self.multi_scale_encoder = MultiScaleEncoder(cfg)
        self.sm_mlp_head = nn.Sequential(nn.LayerNorm(cfg.sm_dim), nn.Linear(cfg.sm_dim, 1))
        self.lg_mlp_head = nn.Sequential(nn.LayerNorm(cfg.lg_dim), nn.Linear(cfg.lg_dim, 1))

    @property
    def token_grids(self) -> dict[str, dict[str, int]]:
        """Feature-map grid, padded grid, patch grid and token count of each branch."""
        out = {}
        for name, emb in (("sm", self.sm_image_embedder), ("lg", self.lg_image_embedder)):
            out[name] = {
                "channels": emb.efficient_net.out_channels,
                "feature_grid": emb.efficient_net.out_grid,
                "padded_grid": emb.grid_padded,
                "patch_size": emb.patch_size,
                "patch_grid": emb.patch_grid,
                "tokens": emb.num_patches + 1,
            }
        return out

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that get no weight decay: the position embeddings and CLS tokens (as in timm).

        Biases and normalisation weights (every 0-/1-D parameter) are left out of weight decay by the optimiser's
        own rule (``optim.no_decay_bias_norm`` in training), so they are not listed here.
        """
        names: set[str] = set()
        for prefix, module in self.named_modules():
            if isinstance(module, ImageEmbedder):
                names.update(f"{prefix}.{name}" for name in ("pos_embedding", "cls_token"))
        return names

    def _check_input(self, x: torch.Tensor) -> None:
        s = self.config.image_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"expected input of shape (B, 3, {s}, {s}), got {tuple(x.shape)}")

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token sequences entering the encoder: (B, 1 + N_sm, sm_dim), (B, 1 + N_lg, lg_dim)."""
        self._check_input(x)
        return self.sm_image_embedder(x), self.lg_image_embedder(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two CLS embeddings after the multi-scale encoder: (B, sm_dim), (B, lg_dim)."""
        sm_tokens, lg_tokens = self.embed(x)
        sm_tokens, lg_tokens = self.multi_scale_encoder(sm_tokens, lg_tokens)
        return sm_tokens[:, 0], lg_tokens[:, 0]

    def forward_head(self, features: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Sum of the two branch logits: (B, 1)."""
        sm_cls, lg_cls = features
        return self.sm_mlp_head(sm_cls) + self.lg_mlp_head(lg_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(fake) per input, (B,), computed in inference mode (call ``eval()`` first for deterministic output)."""
        return torch.sigmoid(self.forward(x)).squeeze(1)


# --------------------------------------------------------------------------------------------------------------
# Named presets (registered in cevit.models.registry)

V1_CONFIG = CrossEfficientViTConfig(
    image_size=380, sm_dim=64, lg_dim=128, sm_patch_size=4, lg_patch_size=16, depth=4,
    sm_enc_depth=2, sm_enc_heads=8, sm_enc_dim_head=64, sm_enc_mlp_dim=256,
    lg_enc_depth=2, lg_enc_heads=8, lg_enc_dim_head=64, lg_enc_mlp_dim=512,
    cross_attn_depth=2, cross_attn_heads=8, cross_attn_dim_head=64, dropout=0.1, emb_dropout=0.1,
)  # fmt: skip
V1_PREPROCESSING = Preprocessing(
    input_size=380, channel_order="RGB", value_scale=255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    resize_mode="stretch", crop_margin=0.2, crop_border="pad",
)  # fmt: skip

COCCOMINI2022_CONFIG = CrossEfficientViTConfig(
    image_size=224, sm_dim=192, lg_dim=384, sm_patch_size=7, lg_patch_size=56, depth=4,
    sm_enc_depth=2, sm_enc_heads=8, sm_enc_dim_head=64, sm_enc_mlp_dim=2048,
    lg_enc_depth=3, lg_enc_heads=8, lg_enc_dim_head=64, lg_enc_mlp_dim=2048,
    cross_attn_depth=2, cross_attn_heads=8, cross_attn_dim_head=64, dropout=0.15, emb_dropout=0.15,
)  # fmt: skip
COCCOMINI2022_PREPROCESSING = Preprocessing(
    input_size=224, channel_order="BGR", value_scale=1.0, mean=None, std=None,
    resize_mode="isotropic_pad", crop_margin=0.0, crop_border="clip",
)  # fmt: skip
