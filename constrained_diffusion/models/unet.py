"""A compact UNet for small images (MNIST-sized), as in DDPM (Ho et al., 2020).

Residual blocks (GroupNorm, SiLU, 3x3 convolutions) conditioned on a sinusoidal time
embedding, down/up-sampling by 2, and self-attention at the resolutions listed in
``attention_resolutions`` (PyTorch's ``scaled_dot_product_attention``, i.e. a fused kernel).

Shapes: input ``(B, in_channels, H, W)`` with ``H, W`` divisible by
``2 ** (len(channel_mult) - 1)``; time ``(B,)``; output ``(B, out_channels, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn


class UNetConfig(BaseModel):
    """Architecture of `UNet`; stored next to the weights."""

    model_config = ConfigDict(extra="forbid")
    in_channels: int = Field(1, ge=1)
    out_channels: int = Field(1, ge=1)
    base_channels: int = Field(32, ge=8)
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = Field(2, ge=1)
    attention_resolutions: tuple[int, ...] = (8,)
    sample_size: int = Field(32, ge=4)
    num_classes: int | None = None
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of ``t`` (shape ``(B,)``) into ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


def _norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with the largest power-of-two number of groups <= 32 that divides ``ch``
    and leaves at least 4 channels per group (when ``ch >= 4``)."""
    groups = 32
    while groups > 1 and (ch % groups or groups > max(1, ch // 4)):
        groups //= 2
    return nn.GroupNorm(groups, ch)


class ResBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))) + emb)))`` with a 1x1 skip when channels change."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over spatial positions, with a residual connection."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        qkv = rearrange(self.qkv(self.norm(x)), "b (three c) h w -> three b 1 (h w) c", three=3)
        # contiguous q, k, v make the fused SDPA kernel eligible (strided inputs fall back to math)
        h = F.scaled_dot_product_attention(*(part.contiguous() for part in qkv))
        return x + self.out(rearrange(h, "b 1 (h w) c -> b c h w", h=H, w=W))


class UNet(nn.Module):
    """DDPM-style UNet; ``forward(x, t, y=None)`` returns a tensor shaped like ``x``'s output channels.

    Args:
        config: the architecture; keyword arguments build one when ``config`` is ``None``.
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs: object) -> None:
        super().__init__()
        self.config = cfg = config if config is not None else UNetConfig(**kwargs)  # type: ignore[arg-type]
        levels = len(cfg.channel_mult)
        if cfg.sample_size % (2 ** (levels - 1)):
            raise ValueError(f"sample_size={cfg.sample_size} must be divisible by {2 ** (levels - 1)}")
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(cfg.num_classes, emb_dim) if cfg.num_classes else None
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [ch]
        res = cfg.sample_size
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                block = nn.ModuleList([ResBlock(ch, cfg.base_channels * mult, emb_dim, cfg.dropout)])
                ch = cfg.base_channels * mult
                if res in cfg.attention_resolutions:
                    block.append(Attention(ch))
                self.down.append(block)
                skips.append(ch)
            if level < levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2

        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, cfg.dropout), Attention(ch), ResBlock(ch, ch, emb_dim, cfg.dropout)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(ch + skips.pop(), cfg.base_channels * mult, emb_dim, cfg.dropout)])
                ch = cfg.base_channels * mult
                if res in cfg.attention_resolutions:
                    block.append(Attention(ch))
                if level > 0 and i == cfg.num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(ch, ch, 3, padding=1))
                    res *= 2
                self.up.append(block)
        self.head = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    @staticmethod
    def _run_block(block: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in block:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``x``: ``(B, C, H, W)``; ``t``: ``(B,)`` or scalar; ``y``: optional ``(B,)`` class labels."""
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels).to(x.dtype))
        if self.class_emb is not None and y is not None:
            emb = emb + self.class_emb(y)
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = self._run_block(block, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            h = self._run_block(block, torch.cat([h, hs.pop()], dim=1), emb)
        return self.head(h)
