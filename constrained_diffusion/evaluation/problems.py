"""What every evaluation and tuning run builds before it samples: the model, the image set and each batch's problem.

`load_denoiser` loads ``--model`` and refuses anything that is not a diffusion or flow model;
`pixel_resolution` is the size of its images; `open_set` opens ``--data`` at that size and keeps
the first ``limit`` ids; a `TaskSpec` (the task, its options, the seed and the measurement
noise) turns a decoded batch into its `Problem` (`make_problem`, seeded by each image's id);
`problem_batches` does it for a whole set, batch by batch, leaving out unreadable files.
`constrained_diffusion.evaluation.harness.Evaluation` and ``constrained-diffusion tune``
(`constrained_diffusion.tuning.tuner.Tuner`) both build their problems here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from constrained_diffusion.evaluation.image_tasks import Problem, make_problem


def load_denoiser(name: str, device: str, dtype: str) -> Any:
    """The model ``name`` (`constrained_diffusion.models.loading.load`) on ``device`` in ``dtype``, which must be a `Denoiser`.

    Raises:
        ValueError: naming ``--model``, when it is not a diffusion or flow model (a classifier, say).
    """
    from constrained_diffusion.denoisers import Denoiser
    from constrained_diffusion.models.loading import load

    model = load(name, device, dtype)
    if not isinstance(model, Denoiser):
        raise ValueError(f"--model: {name!r} is not a diffusion or flow model ({type(model).__name__})")
    return model


def pixel_resolution(model: Any) -> tuple[int, int, int]:
    """``(C, H, W)`` of the model's images: its sample shape in pixel space, the decoded size otherwise."""
    if model.codec is None:
        if len(model.sample_shape) != 3:
            raise ValueError(f"--model: the harness needs image models (C, H, W), got sample shape {model.sample_shape}")
        return tuple(model.sample_shape)  # type: ignore[return-value]
    if getattr(model, "height", None) and getattr(model, "width", None):
        return (3, int(model.height), int(model.width))
    with torch.no_grad():
        z = torch.zeros(1, *model.sample_shape, device=model.device, dtype=model.dtype)
        return tuple(model.codec.decode(z).shape[1:])  # type: ignore[return-value]


def open_set(data: str, resolution: Sequence[int], limit: int | None = None,
             report: Callable[[str], object] | None = None) -> tuple[Any, list[str]]:
    """The image set ``data`` at ``resolution`` (`constrained_diffusion.data.images.open_images`) and its first ``limit`` ids.

    Args:
        data: ``--data``: a shipped set, a folder or an image file.
        resolution: ``(C, H, W)`` (`pixel_resolution`).
        limit: keep the first N ids (sorted by id); ``None`` keeps all.
        report: receives one line per skipped (corrupt) file of a folder; ``None`` says nothing.
    """
    from constrained_diffusion.data.images import open_images

    images = open_images(data, resolution, report=report or (lambda _: None))
    return images, (list(images.ids[:limit]) if limit is not None else list(images.ids))


@dataclass(frozen=True)
class TaskSpec:
    """What makes a batch's problem besides its images: the task, its options, the run seed and the noise.

    Attributes:
        task: a `BUILTIN_TASKS` name or a registered constraint.
        seed: the run seed (each image's masks and noise come from ``(seed, id)``).
        noise_std: sigma of the measurement noise on the ``[-1, 1]`` scale.
        options: the task's options (``task.KEY`` of ``--set``).
        style_image: the ``style`` task's reference.

    Examples:
        >>> spec = TaskSpec("top-half")
        >>> problem = spec.problem(torch.zeros(2, 1, 8, 8), ["a", "b"])
        >>> problem.constraint.mask[0, 0, :, 0].tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    """

    task: str
    seed: int = 0
    noise_std: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    style_image: Any = None

    def problem(self, truth: torch.Tensor, ids: Sequence[str], device: str | torch.device = "cpu") -> Problem:
        """The `Problem` of clean images ``truth`` ``(B, C, H, W)`` with ids ``ids``, on ``device``."""
        return make_problem(self.task, truth.to(device), ids, self.seed, self.noise_std, self.options, self.style_image)


def problem_batches(images: Any, ids: Sequence[str], batch_size: int, spec: TaskSpec,
                    device: str | torch.device = "cpu") -> Iterator[tuple[list[str], torch.Tensor, Problem]]:
    """``(ids, truth, problem)`` per batch of ``ids``: the readable images (``truth`` on the CPU) and their problem on ``device``.

    An unreadable file is left out of its batch (`load_available` reports it); a batch with none left is skipped.
    """
    from constrained_diffusion.data.images import load_available

    for start in range(0, len(ids), batch_size):
        truth, kept = load_available(images, ids[start:start + batch_size])
        if truth is not None:
            yield kept, truth, spec.problem(truth, kept, device)
