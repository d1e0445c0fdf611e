"""Where a segmentation network named by a string comes from: registered architectures, optional safetensors weights.

A configuration file (an ``evaluate`` task's ``network:`` field) names a network by a string.
Such a string is looked up, never imported: it must be the name of a registered architecture,

* registered in this process with `register_network` (``@register_network("my-segnet")`` on a
  zero-argument function returning an ``nn.Module``), or
* declared by an installed package in the entry-point group ``constrained_diffusion.segmentation_networks``
  (``NETWORK_GROUP``), e.g. in its ``pyproject.toml``::

      [project.entry-points."constrained_diffusion.segmentation_networks"]
      my-segnet = "my_package.models:build_segmenter"

Installing a package is the act of trusting its code; a data file naming ``"os:abort"`` or
``"builtins:print"`` is refused, not imported. Trained weights come from a ``.safetensors`` file
(``weights=``), loaded into the registered architecture with ``load_state_dict(strict=True)``:
tensors only, nothing is unpickled.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> @register_network("doc-segnet")
    ... def build() -> nn.Module:
    ...     return nn.Conv2d(3, 2, 1)
    >>> type(load_network("doc-segnet")).__name__
    'Conv2d'
    >>> load_network("os:abort")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: network: 'os:abort' is not a registered segmentation network (...); ...
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from torch import nn

__all__ = ["NETWORK_GROUP", "load_network", "network_names", "register_network"]

NETWORK_GROUP = "constrained_diffusion.segmentation_networks"
"""Entry-point group of segmentation architectures: name -> zero-argument factory returning an ``nn.Module``."""

_REGISTERED: dict[str, Callable[[], nn.Module]] = {}


def register_network(name: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Decorator: register a zero-argument factory returning an ``nn.Module`` under ``name`` (this process only).

    Raises:
        ValueError: an empty name, or one with ``:`` or a path separator (those are never names).
    """
    if not isinstance(name, str) or not name or any(c in name for c in ":/\\"):
        raise ValueError(f"a segmentation network's name must be a non-empty string without ':', '/' or '\\', got {name!r}")

    def decorate(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if not callable(factory):
            raise TypeError(f"register_network({name!r}) needs a callable, got {type(factory).__name__}")
        _REGISTERED[name] = factory
        return factory

    return decorate


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=NETWORK_GROUP)}


def network_names() -> list[str]:
    """Every registered architecture's name: this process's and the installed packages' (sorted)."""
    return sorted(set(_REGISTERED) | set(_entry_points()))


def load_network(name: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Build the registered architecture ``name`` and, if given, load its ``.safetensors`` weights.

    Args:
        name: a registered name (`register_network` or the ``NETWORK_GROUP`` entry points).
        weights: a ``.safetensors`` file of the architecture's ``state_dict`` (every key, no extra).

    Returns:
        the network.

    Raises:
        ValueError: ``name`` is not registered (an import string, a file path or a typo: listing
            the registered names), the factory returns no ``nn.Module``, ``weights`` is not a
            ``.safetensors`` file or does not fit the architecture — each naming ``network`` or
            ``weights``.
        FileNotFoundError: ``weights`` does not exist.
    """
    if not isinstance(name, str):
        raise TypeError(f"network must be a registered name (str) or an nn.Module, got {type(name).__name__}")
    factory: Callable[[], object] | None = _REGISTERED.get(name)
    if factory is None:
        ep = _entry_points().get(name)
        if ep is not None:
            factory = ep.load()  # type: ignore[attr-defined]
    if factory is None:
        known = ", ".join(network_names()) or "none"
        hint = ""
        if ":" in name:
            hint = "; an import string 'module:callable' is never imported from a configuration: register the factory"
        elif name.endswith((".safetensors", ".pt", ".pth", ".bin", ".ckpt")):
            hint = "; a weight file goes in weights=, with network= naming its registered architecture"
        raise ValueError(f"network: {name!r} is not a registered segmentation network (registered: {known}){hint}; "
                         f"register one with cd_segmentation.register_network or the entry-point group {NETWORK_GROUP!r}")
    net = factory()
    if not isinstance(net, nn.Module):
        raise ValueError(f"network: the factory registered as {name!r} returned {type(net).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_weights(net, Path(weights))
    return net


def _load_weights(net: nn.Module, path: Path) -> None:
    """``net.load_state_dict(safetensors.load_file(path), strict=True)``, errors naming ``weights``."""
    if path.suffix != ".safetensors":
        raise ValueError(f"weights: {str(path)!r} is not a .safetensors file (pickled checkpoints are never loaded)")
    if not path.is_file():
        raise FileNotFoundError(f"weights: no file at {str(path)!r}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"weights: cannot read {str(path)!r} as safetensors: {exc}") from exc
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights: {str(path)!r} does not fit the architecture: {str(exc).splitlines()[0]}") from exc
