"""Flux (``FluxPipeline``) as a `Denoiser`, over diffusers.

Constraints see unpacked latents ``(B, C, h, w)`` with ``C = in_channels / 4``; packing into
``(B, h w / 4, 4 C)`` tokens (2x2 patches) with image and text position ids happens inside the
model call, and the transformer receives the time ``s`` (``1000 s / 1000``, rounded as the
pipeline rounds it). A guidance-distilled transformer (``guidance_embeds``, FLUX.1-dev)
receives ``guidance_scale`` as its guidance embedding and no unconditional pass; otherwise
``guidance_scale > 1`` with negative embeddings is true classifier-free guidance. The grid is
the pipeline's: ``linspace(1, 1/steps, steps)`` shifted with ``mu`` from the packed sequence
length ``h w / 4`` (see `FlowMatchEulerSchedule`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.denoisers.flow_match import FlowMatchDenoiser
from constrained_diffusion.denoisers.schedules import FlowBase


def pack(x: Tensor) -> Tensor:
    """Latents ``(B, C, h, w)`` -> Flux tokens ``(B, h w / 4, 4 C)`` (2x2 patches, row-major)."""
    B, C, h, w = x.shape
    return x.reshape(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (h // 2) * (w // 2), C * 4)


def unpack(tokens: Tensor, C: int, h: int, w: int) -> Tensor:
    """The inverse of `pack`: ``(B, h w / 4, 4 C)`` -> ``(B, C, h, w)``."""
    B = tokens.shape[0]
    return tokens.reshape(B, h // 2, w // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, C, h, w)


class FluxDenoiser(FlowMatchDenoiser, family="Flux"):
    """A Flux transformer, its VAE (the codec) and its flow-matching schedule.

    Build with `from_pretrained` or `from_pipeline`, then bind the conditioning with
    `condition`. Samples are unpacked latents ``(C, H/8, W/8)``.

    Args:
        pipe: a diffusers ``FluxPipeline``.
        height: image height in pixels (default: the pipeline's ``default_sample_size`` x the VAE factor).
        width: image width in pixels (same default).
    """

    SUPPORTED = ("FluxPipeline",)

    @staticmethod
    def _patch(pipe: Any) -> int:
        return 2  # 2x2 packing

    @staticmethod
    def _default_sample_size(pipe: Any) -> int:
        return int(getattr(pipe, "default_sample_size", 128))

    @staticmethod
    def _latent_channels(pipe: Any) -> int:
        return int(pipe.transformer.config.in_channels) // 4

    @staticmethod
    def _grid_base(config: Any) -> FlowBase:
        return "scheduler" if config.get("use_flow_sigmas", False) else "linear"

    @property
    def distilled(self) -> bool:
        """Whether the transformer takes a guidance embedding (FLUX.1-dev) instead of true CFG."""
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    def condition(self, prompt: str | list[str] = "", negative_prompt: str | list[str] = "", guidance_scale: float = 1.0,
                  prompt_embeds: Tensor | None = None, pooled_prompt_embeds: Tensor | None = None,
                  negative_prompt_embeds: Tensor | None = None,
                  negative_pooled_prompt_embeds: Tensor | None = None) -> FluxDenoiser:
        """As `FlowMatchDenoiser.condition`; for a distilled transformer ``guidance_scale`` is its embedding."""
        if self.distilled:
            if guidance_scale < 0:
                raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
            bound = super().condition(prompt, "", 1.0, prompt_embeds, pooled_prompt_embeds)
            bound.guidance_scale = float(guidance_scale)
            return bound  # type: ignore[return-value]
        return super().condition(prompt, negative_prompt, guidance_scale, prompt_embeds, pooled_prompt_embeds,  # type: ignore[return-value]
                                 negative_prompt_embeds, negative_pooled_prompt_embeds)

    @torch.no_grad()
    def _encode(self, prompt: str | list[str], negative_prompt: str | list[str], cfg: bool) -> tuple[Any, Any, Any, Any]:
        pos, pooled, _ = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.device, num_images_per_prompt=1)
        neg = neg_pooled = None
        if cfg and not self.distilled:
            neg, neg_pooled, _ = self.pipe.encode_prompt(prompt=negative_prompt or "", prompt_2=None, device=self.device,
                                                         num_images_per_prompt=1)
        return pos, pooled, neg, neg_pooled

    def _conditioning(self, batch: int) -> tuple[Tensor, Tensor, bool]:
        text, pooled, guided = super()._conditioning(batch)
        return text, pooled, guided and not self.distilled

    def _velocity(self, x: Tensor, s: Tensor, text: Tensor, pooled: Tensor) -> Tensor:
        B, C, h, w = x.shape
        img_ids = torch.zeros(h // 2, w // 2, 3)
        img_ids[..., 1] += torch.arange(h // 2)[:, None]
        img_ids[..., 2] += torch.arange(w // 2)[None, :]
        img_ids = img_ids.reshape(-1, 3).to(self.device, self.dtype, non_blocking=True)
        txt_ids = torch.zeros(text.shape[1], 3, device=self.device, dtype=self.dtype)
        timestep = self.schedule.model_time(s).to(self.device, self.dtype, non_blocking=True).expand(B) / 1000
        guidance = torch.full((B,), self.guidance_scale, device=self.device, dtype=torch.float32) if self.distilled else None
        network = self._transformer if self.compile_options.compile else self.transformer
        v = network(hidden_states=pack(x).to(self.dtype), timestep=timestep, guidance=guidance,
                             pooled_projections=pooled, encoder_hidden_states=text, txt_ids=txt_ids, img_ids=img_ids,
                             return_dict=False)[0]
        return unpack(v, C, h, w)

    def __repr__(self) -> str:
        return f"FluxDenoiser(sample_shape={self.sample_shape}, guidance_scale={self.guidance_scale}, distilled={self.distilled})"
