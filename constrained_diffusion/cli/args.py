"""Argument types shared by the sub-commands (each rejects bad values with a one-line error).

`format_table`, `replace_block` and `write_block` live in `constrained_diffusion.utils.tables` and are re-exported here.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from constrained_diffusion.utils.tables import format_table, replace_block, write_block

__all__ = ["default_device", "describe_device", "device_name", "documented_command", "format_table", "int_at_least", "non_negative_int",
           "positive_int", "replace_block", "summary", "write_block"]


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum``, else a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def device_name(text: str) -> str:
    """An argparse type: ``cpu``, or ``cuda`` / ``cuda:N`` where that GPU exists, else a one-line error."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:N], got {text!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine (use cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:N], got {text!r}")
    return str(device)


device_name.__name__ = "device"


def default_device() -> str:
    """``"cuda"`` where a GPU is available, else ``"cpu"`` (the default of every ``--device``)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def describe_device(device: str) -> str:
    """The hardware a measurement ran on: the GPU's name on CUDA, else CPU threads and processor."""
    import platform

    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"{torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}"


def documented_command(command: str, args: argparse.Namespace, options: Sequence[str],
                       omit: Mapping[str, Any] | None = None) -> str:
    """The command line a ``--write-docs`` block shows, rebuilt from the parsed ``args``.

    Running it again with ``--write-docs PAGE`` regenerates the block, so it names every
    option that changes the block's numbers.

    Args:
        command: the sub-command, e.g. ``"bench"`` or ``"analyze eigvec"``.
        args: the parsed arguments.
        options: in order, option strings (``"--inner-steps"`` is ``args.inner_steps``) or
            positional names (``"model"``: its value alone). ``None`` and ``False`` leave the
            option out, ``True`` writes the bare flag, a list its values after one flag.
        omit: options left out while their value is the one given (a default block name).

    Examples:
        >>> args = argparse.Namespace(model="ddpm", steps=50, tasks=["box", "sr4"], quick=True, grid=None)
        >>> documented_command("model-card", args, ["model", "--steps", "--tasks", "--quick", "--grid"])
        'constrained-diffusion model-card ddpm --steps 50 --tasks box sr4 --quick'
    """
    parts = ["constrained-diffusion", *command.split()]
    for option in options:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is None or value is False or (omit is not None and option in omit and omit[option] == value):
            continue
        flag = [option] if option.startswith("-") else []
        if value is True:
            parts += flag
        elif isinstance(value, (list, tuple)):
            parts += [*flag, *(_token(v) for v in value)]
        else:
            parts += [*flag, _token(value)]
    return " ".join(parts)


def _token(value: Any) -> str:
    return shlex.quote(os.fspath(value) if isinstance(value, Path) else str(value))


def summary(doc: str | None) -> str | None:
    """First line of a module docstring, without reST literal markers, for ``--help``."""
    return doc.splitlines()[0].replace("``", "") if doc else None


def renamed_flag(new: str) -> type[argparse.Action]:
    """An argparse action for a flag renamed in 0.2: stores under ``new``'s destination and warns (`DeprecationWarning`).

    Register it hidden beside the new flag, e.g. ``p.add_argument("--lr", dest="step_scale",
    nargs="+", type=float, action=renamed_flag("--step-scale"), help=argparse.SUPPRESS)``.
    """

    class Renamed(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
            from constrained_diffusion.utils.renamed import deprecated

            deprecated(str(option_string), new)
            setattr(namespace, self.dest, values)

    return Renamed
