"""The networks people use, built from their public configurations with random weights.

No machine here can download weights, and a forward's arithmetic (its time and its memory)
does not depend on them. So the benchmarks build the real architectures from the public
``config.json`` files, embedded below, with seeded random weights, and wrap them in the
package's own adapters, exactly as a loaded checkpoint would be:

* ``"sd15"`` — Stable Diffusion 1.5's ``UNet2DConditionModel`` (859.5M parameters), its
  ``AutoencoderKL`` (83.7M) and DDIM schedule, as a `StableDiffusionDenoiser`; text
  conditioning ``(1, 77, 768)``.
* ``"sd3"`` — Stable Diffusion 3 Medium's ``SD3Transformer2DModel`` (24 MM-DiT blocks, 2.03B
  parameters), flow-matching schedule with ``shift = 3``, as an `SD3Denoiser`; text
  ``(1, 333, 4096)`` (77 CLIP + 256 T5 tokens) and pooled ``(1, 2048)``.
* ``"flux"`` — FLUX.1-dev's ``FluxTransformer2DModel`` (19 double + 38 single blocks, 11.9B
  parameters; guidance-distilled), dynamic-shift schedule, as a `FluxDenoiser`; text
  ``(1, 512, 4096)`` and pooled ``(1, 768)``.

``depth`` keeps the width and cuts the number of blocks (SD3: ``num_layers = depth``; Flux:
``depth`` double and ``2 depth`` single blocks, the full model's ratio), so that a model that
does not fit measures per block what the full one would. ``tiny=True`` shrinks every width as
well: a smoke test of the code paths, whose numbers mean nothing.

The transformers' VAEs are not built: the memory bench's constraint lives in latent space,
and a stand-in codec with the real scaling returns latents as "images" (`LatentOnlyVAE`).
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.models.loading import parse_dtype

ARCHES: tuple[str, ...] = ("sd15", "sd3", "flux")

SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
"""The ``UNet2DConditionModel`` configuration of Stable Diffusion 1.5."""

SD15_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "scaling_factor": 0.18215,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
"""The ``AutoencoderKL`` configuration of Stable Diffusion 1.5."""

SD15_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
"""Stable Diffusion 1.5's scheduler configuration (read as a ``DDIMScheduler``'s)."""

SD3_MEDIUM_TRANSFORMER: dict[str, Any] = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": 24, "attention_head_dim": 64,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048, "out_channels": 16, "pos_embed_max_size": 192,
}
"""``stabilityai/stable-diffusion-3-medium-diffusers``, ``transformer/config.json``."""

SD3_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}
"""SD3 Medium's ``FlowMatchEulerDiscreteScheduler`` configuration."""

FLUX_DEV_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
"""``black-forest-labs/FLUX.1-dev``, ``transformer/config.json``."""

FLUX_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15,
    "base_image_seq_len": 256, "max_image_seq_len": 4096,
}
"""FLUX.1-dev's ``FlowMatchEulerDiscreteScheduler`` configuration."""

TEXT: dict[str, tuple[int, int, int]] = {"sd15": (77, 768, 0), "sd3": (333, 4096, 2048), "flux": (512, 4096, 768)}
"""``(text tokens, text width, pooled width)`` of each family's conditioning."""

_TINY: dict[str, dict[str, Any]] = {
    "sd15": {"block_out_channels": [8, 16, 16, 16], "cross_attention_dim": 16, "attention_head_dim": 2,
             "norm_num_groups": 4, "layers_per_block": 1},
    "sd3": {"num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "joint_attention_dim": 16,
            "caption_projection_dim": 16, "pooled_projection_dim": 8},
    "flux": {"num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2,
             "joint_attention_dim": 16, "pooled_projection_dim": 8, "axes_dims_rope": [4, 4, 8]},
}
_TINY_VAE: dict[str, Any] = {"block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4, "layers_per_block": 1}
_TINY_TEXT: dict[str, tuple[int, int, int]] = {"sd15": (8, 16, 0), "sd3": (8, 16, 8), "flux": (8, 16, 8)}


class LatentOnlyVAE(nn.Module):
    """A codec stand-in with a VAE's configuration (factor 8) whose decoder returns the latents.

    The memory bench constrains latents directly and never needs pixels; building SD3's or
    Flux's real decoder would only add its weights to the process.
    """

    def __init__(self, latent_channels: int, scaling_factor: float, shift_factor: float) -> None:
        super().__init__()
        self.config = SimpleNamespace(block_out_channels=[1, 1, 1, 1], latent_channels=latent_channels,
                                      scaling_factor=scaling_factor, shift_factor=shift_factor)
        self.dtype = torch.float32

    def decode(self, z: Tensor) -> SimpleNamespace:
        """``.sample``: the latents themselves."""
        return SimpleNamespace(sample=z)


def network_config(arch: str, depth: int | None = None, tiny: bool = False) -> dict[str, Any]:
    """The denoising network's configuration of ``arch``, cut to ``depth`` blocks and/or made tiny.

    Raises:
        ValueError: an unknown ``arch``; a ``depth`` below 1, or one given for ``"sd15"``.

    Examples:
        >>> network_config("flux", depth=2)["num_single_layers"]
        4
    """
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, got {arch!r}")
    base = {"sd15": SD15_UNET, "sd3": SD3_MEDIUM_TRANSFORMER, "flux": FLUX_DEV_TRANSFORMER}[arch]
    config = {**base, **(_TINY[arch] if tiny else {})}
    if depth is not None:
        if arch == "sd15":
            raise ValueError("depth: the SD 1.5 UNet has no depth option (it applies to sd3 and flux)")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        config["num_layers"] = depth
        if arch == "flux":
            config["num_single_layers"] = 2 * depth
    return config


def _conditioning(arch: str, tiny: bool, device: str, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    tokens, width, pooled = (_TINY_TEXT if tiny else TEXT)[arch]
    g = torch.Generator().manual_seed(1)
    text = torch.randn(1, tokens, width, generator=g).to(device, dtype)
    return text, (torch.randn(1, pooled, generator=g).to(device, dtype) if pooled else None)


def build_denoiser(arch: str, size: int = 64, device: str = "cpu", dtype: torch.dtype | str = torch.float32,
                   depth: int | None = None, tiny: bool = False, **options: Any) -> Denoiser:
    """``arch``'s adapter over a random-weight network (seed 0) with a random conditioning bound.

    Args:
        arch: ``"sd15"``, ``"sd3"`` or ``"flux"``.
        size: the latent side (64: 512x512 images).
        device: ``"cpu"`` or ``"cuda[:N]"``.
        dtype: the network's dtype.
        depth: blocks of a transformer (see the module docstring); ``None``: the full model.
        tiny: tiny widths (a smoke test).
        **options: the adapter's options, e.g. ``compile=True`` (`constrained_diffusion.denoisers.compiled`).

    Returns:
        A `StableDiffusionDenoiser` (with SD 1.5's VAE), `SD3Denoiser` or `FluxDenoiser` with
        the conditioning bound at ``guidance_scale = 1`` (Flux's distilled guidance 3.5), samples
        ``(C, size, size)``.
    """
    torch_dtype = parse_dtype(dtype)
    config = network_config(arch, depth, tiny)
    text, pooled = _conditioning(arch, tiny, device, torch_dtype)
    torch.manual_seed(0)
    # on a GPU the random initialisation runs there (seconds instead of a minute for SD3's 2B parameters)
    with torch.device(device) if torch.device(device).type == "cuda" else contextlib.nullcontext():
        return _build(arch, size, device, torch_dtype, config, text, pooled, tiny, options)


def _build(arch: str, size: int, device: str, torch_dtype: torch.dtype, config: dict[str, Any], text: Tensor,
           pooled: Tensor | None, tiny: bool, options: dict[str, Any]) -> Denoiser:
    if arch == "sd15":
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

        from constrained_diffusion.denoisers.stable_diffusion import StableDiffusionDenoiser

        unet = UNet2DConditionModel(**{**config, "cross_attention_dim": text.shape[-1]})
        vae = AutoencoderKL(**{**SD15_VAE, **(_TINY_VAE if tiny else {})})
        pipe = SimpleNamespace(unet=_frozen(unet, device, torch_dtype), vae=_frozen(vae, device, torch_dtype),
                               scheduler=DDIMScheduler.from_config(SD15_SCHEDULER))
        den = StableDiffusionDenoiser(pipe, size * 8, size * 8, **options)
        return den.condition(prompt_embeds=text)
    from diffusers import FlowMatchEulerDiscreteScheduler

    if arch == "sd3":
        from diffusers import SD3Transformer2DModel

        from constrained_diffusion.denoisers.sd3 import SD3Denoiser

        net = SD3Transformer2DModel(**config)
        scheduler, channels, scaling, shift, cls = SD3_SCHEDULER, config["in_channels"], 1.5305, 0.0609, SD3Denoiser
    else:
        from diffusers import FluxTransformer2DModel

        from constrained_diffusion.denoisers.flux import FluxDenoiser

        net = FluxTransformer2DModel(**config)
        scheduler, channels, scaling, shift, cls = FLUX_SCHEDULER, config["in_channels"] // 4, 0.3611, 0.1159, FluxDenoiser
    pipe = SimpleNamespace(transformer=_frozen(net, device, torch_dtype), vae=LatentOnlyVAE(channels, scaling, shift),
                           scheduler=FlowMatchEulerDiscreteScheduler.from_config(scheduler))
    den = cls(pipe, size * 8, size * 8, **options)
    guidance = 3.5 if arch == "flux" else 1.0
    return den.condition(prompt_embeds=text, pooled_prompt_embeds=pooled, guidance_scale=guidance)


def _frozen(module: nn.Module, device: str, dtype: torch.dtype) -> nn.Module:
    return module.to(device, dtype).eval().requires_grad_(False)


def parameter_count(denoiser: Denoiser) -> int:
    """Parameters of the denoising network (UNet or transformer) of a `build_denoiser` result."""
    net = getattr(denoiser, "unet", None) or getattr(denoiser, "transformer", None)
    return sum(p.numel() for p in net.parameters()) if isinstance(net, nn.Module) else 0
