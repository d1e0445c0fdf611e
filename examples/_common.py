"""Helpers shared by the examples: labelled figures, the output folder, tiny random pipelines.

Not an example itself (the gallery and `tests/test_examples.py` skip files whose name starts
with ``_``). Everything here builds from configs or from data that ships with the package;
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

from constrained_diffusion.cli.demo import label_columns
from constrained_diffusion.utils.images import make_grid, save_png, to_uint8

OUTPUT = Path(__file__).resolve().parent / "output"
"""Default folder for the examples' figures (``examples/output/``, ignored by git)."""


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser.parse_known_args()[0]``: unknown arguments (a notebook kernel's) are ignored."""
    args, _ = parser.parse_known_args()
    return args


def out_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--out DIR`` (default ``examples/output``) to ``parser``."""
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"folder for the figures (default {OUTPUT})")


def save_columns(path: Path, columns: dict[str, Tensor], scale: int = 2) -> Path:
    """Write one labelled PNG: a column per entry of ``columns``, a row per sample.

    Args:
        path: the PNG to write (folders are created).
        columns: label -> images ``(N, C, H, W)`` in ``[-1, 1]``; every entry has the same
            ``N, H, W``; grey (``C = 1``) columns are repeated to RGB when another is RGB.
        scale: nearest-neighbour upscaling factor of each image.

    Returns:
        ``path``.
    """
    images = [c.detach().float().cpu().clamp(-1, 1) for c in columns.values()]
    channels = max(c.shape[1] for c in images)
    images = [c.expand(-1, channels, -1, -1) if c.shape[1] == 1 else c for c in images]
    n = images[0].shape[0]
    # row-major: sample i, then every column
    tiles = torch.stack(images, dim=1).flatten(0, 1).repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
    grid = to_uint8(make_grid(tiles, nrow=len(images), pad_value=1.0))
    assert tiles.shape[0] == n * len(images)
    return save_png(path, label_columns(grid, list(columns), cell_width=tiles.shape[-1]))


def tiny_stable_diffusion(folder: Path) -> Path:
    """Save a tiny randomly initialised Stable Diffusion 1.x pipeline (seed 0) to ``folder``.

    UNet with 4 latent channels on 16 x 16 latents, a VAE with downsampling factor 2 (32 x 32
    pixels), DDIM, and a CLIP text encoder with a 20-word vocabulary written locally, so
    ``from_pretrained(folder)`` and ``condition(prompt=...)`` run the same code as a real
    checkpoint does. The weights are random: the pictures mean nothing.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for word in ["a", "photo", "of", "cat", "dog", "red", "blue", "house", "tree", "sky"]:
        vocab[word + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                                           num_attention_heads=4, num_hidden_layers=2, vocab_size=len(vocab),
                                           max_position_embeddings=16)).eval()
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=32, norm_num_groups=4, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet.eval(), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def colour_digits(n: int, size: int) -> Tensor:
    """``n`` of the package's demo digits as RGB images ``(n, 3, size, size)`` in ``[-1, 1]``.

    Each digit gets its own tint (white strokes become a colour, the background a darker
    complementary one), bilinearly resized to ``size``: test pictures with colour and edges
    that ship with the package.
    """
    from constrained_diffusion.data import demo_digits

    digits, _ = demo_digits()
    if not 1 <= n <= digits.shape[0]:
        raise ValueError(f"n must lie in [1, {digits.shape[0]}], got {n}")
    x = (digits[:n] + 1) / 2  # (n, 1, 32, 32) in [0, 1]
    g = torch.Generator().manual_seed(0)
    ink, paper = torch.rand(n, 3, 1, 1, generator=g), 0.3 * torch.rand(n, 3, 1, 1, generator=g)
    rgb = paper + (ink - paper) * x
    rgb = torch.nn.functional.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False)
    return (rgb * 2 - 1).clamp(-1, 1)
