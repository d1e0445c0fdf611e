"""The half-precision end-to-end comparison: same start, only the arithmetic differs."""

from __future__ import annotations

import pytest
import torch

from constrained_diffusion.analysis.half_precision import half_precision_rows

pytest.importorskip("mlxtend")


def test_rows_compare_each_dtype_with_float32_from_the_same_noise():
    rows = half_precision_rows(models=("ddpm",), dtypes=(torch.bfloat16,), limit=2, steps=2, inner_steps=1)
    assert [(r.model, r.dtype) for r in rows] == [("ddpm", torch.float32), ("ddpm", torch.bfloat16)]
    assert rows[0].delta == 0.0 and rows[1].delta == pytest.approx(rows[1].psnr - rows[0].psnr)
    # a second float32 run reproduces the reference exactly (same digits, same noise)
    again = half_precision_rows(models=("ddpm",), dtypes=(torch.float32,), limit=2, steps=2, inner_steps=1)
    assert again[0].psnr == rows[0].psnr
    # bfloat16 arithmetic changes the result, but not beyond recognition
    assert rows[1].psnr != rows[0].psnr and abs(rows[1].delta) < 3.0


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit must be >= 1"):
        half_precision_rows(limit=0)
