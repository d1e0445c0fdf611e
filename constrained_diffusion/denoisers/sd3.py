"""Stable Diffusion 3 (``StableDiffusion3Pipeline``) as a `Denoiser`, over diffusers.

The MM-DiT transformer receives latents ``(B, C, h, w)`` (patchified inside the model), the
time ``1000 s`` (`FlowMatchEulerSchedule.model_time`), the text embeddings and the pooled
embeddings. The grid is the scheduler's default one, ``linspace`` between its extreme training
sigmas, shifted (SD3's configurations: static ``shift = 3``); see `FlowMatchDenoiser`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.denoisers.flow_match import FlowMatchDenoiser
from constrained_diffusion.denoisers.schedules import FlowBase


class SD3Denoiser(FlowMatchDenoiser, family="StableDiffusion3"):
    """A Stable Diffusion 3 transformer, its VAE (the codec) and its flow-matching schedule.

    Build with `from_pretrained` or `from_pipeline`, then bind the conditioning with
    `condition` (a prompt, or ``prompt_embeds`` with ``pooled_prompt_embeds``). Samples are
    latents ``(C, H/8, W/8)``.

    Args:
        pipe: a diffusers ``StableDiffusion3Pipeline``.
        height: image height in pixels (default: the transformer's ``sample_size`` x the VAE factor).
        width: image width in pixels (same default).
    """

    SUPPORTED = ("StableDiffusion3Pipeline",)
    _default_max_shift = 1.16  # as StableDiffusion3Pipeline

    @staticmethod
    def _patch(pipe: Any) -> int:
        return int(getattr(pipe.transformer.config, "patch_size", 1))

    @staticmethod
    def _default_sample_size(pipe: Any) -> int:
        return int(pipe.transformer.config.sample_size)

    @staticmethod
    def _latent_channels(pipe: Any) -> int:
        return int(pipe.transformer.config.in_channels)

    @staticmethod
    def _grid_base(config: Any) -> FlowBase:
        return "scheduler"

    @torch.no_grad()
    def _encode(self, prompt: str | list[str], negative_prompt: str | list[str], cfg: bool) -> tuple[Any, Any, Any, Any]:
        pos, neg, pooled, neg_pooled = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=cfg, negative_prompt=negative_prompt or None)
        return pos, pooled, neg, neg_pooled

    def _velocity(self, x: Tensor, s: Tensor, text: Tensor, pooled: Tensor) -> Tensor:
        timestep = self.schedule.model_time(s).to(self.device, non_blocking=True).expand(x.shape[0])
        network = self._transformer if self.compile_options.compile else self.transformer
        return network(hidden_states=x.to(self.dtype), timestep=timestep, encoder_hidden_states=text,
                                pooled_projections=pooled, return_dict=False)[0]
