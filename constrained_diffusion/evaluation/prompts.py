"""Captions of a text-conditioned model's images: a prompts file (image id -> caption) or one prompt for all.

`read_prompts` reads the file named by ``--prompts``; `check_prompts` refuses, before any
sampling, a file that misses an image, both ``--prompt`` and ``--prompts``, or captions for a
model that takes no text (one without ``condition``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def read_prompts(path: str | os.PathLike[str]) -> dict[str, str]:
    """Captions by image id from a JSON object ``{id: text}`` or a CSV with columns ``image,text`` (header optional).

    Raises:
        ValueError: a file that is neither, naming ``--prompts``.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--prompts: {p} does not exist")
    text = p.read_text()
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--prompts: {p} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"--prompts: {p} must hold a JSON object mapping image ids to captions")
        return {str(k): v for k, v in data.items()}
    import csv

    rows = list(csv.reader(text.splitlines()))
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["image", "text"], ["id", "text"], ["image", "prompt"]):
        rows = rows[1:]
    if any(len(r) < 2 for r in rows if r):
        raise ValueError(f"--prompts: every CSV row of {p} needs two columns, image id and caption")
    return {r[0]: r[1] for r in rows if r}


def check_prompts(model: Any, model_name: str, ids: Sequence[str], prompts: Mapping[str, str] | None = None,
                  prompts_file: Any = None, prompt: str | None = None) -> None:
    """Refuse captions that do not fit the model or the images.

    Args:
        model: the loaded model; it takes text when it has ``condition``.
        model_name: how the user named it (``--model``).
        ids: the images to caption.
        prompts: the captions read from ``prompts_file`` (`read_prompts`), or ``None``.
        prompts_file: the ``--prompts`` path, for the message.
        prompt: the one ``--prompt`` for every image, or ``None``.

    Raises:
        ValueError: naming ``--prompts`` or ``--prompt``.
    """
    if prompts is not None:
        missing = [i for i in ids if i not in prompts]
        if missing:
            raise ValueError(f"--prompts: {prompts_file} has no caption for {len(missing)} of the {len(ids)} images "
                             f"(first: {missing[0]!r})")
    if prompts is not None and prompt is not None:
        raise ValueError("--prompt and --prompts: give one caption for all images or a file of them, not both")
    if prompt is not None and not hasattr(model, "condition"):
        raise ValueError(f"--prompt: the model {model_name!r} takes no text")
    if prompts is not None and not hasattr(model, "condition"):
        raise ValueError(f"--prompts: the model {model_name!r} takes no text")
