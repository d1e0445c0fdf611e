"""One spelling per concept across the sub-commands: hidden aliases of old spellings, and the flag table of the docs.

Every sub-command spells a shared concept the same way (`SHARED`): models by their
`constrained_diffusion.models.load` names (``--model`` one, ``--models`` several), ``--method`` /
``--methods``, ``--batch-size``, ``--out`` (a folder), ``--quiet``, ``--seed``, ``--device``,
``--steps``. An old spelling (``--batch``, ``--solver``, ``--variants``, ...) still parses: `add_alias`
registers it under the same destination and hides it from ``--help``. `flag_table` is the table of
``docs/cli.md`` (kept equal to the parsers by ``tests/test_cli_vocabulary.py``).
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

SHARED: tuple[tuple[str, ...], ...] = (("--model", "--models"), ("--method", "--methods"), ("--batch-size",), ("--out",), ("--quiet",),
                                       ("--seed",), ("--device",), ("--steps",))
"""The shared concepts, each with its one spelling (one value, several values)."""

MODEL_ALIASES: Mapping[str, str] = {"mnist": "mnist-ddpm", "ddpm": "mnist-ddpm", "flow": "mnist-flow"}
"""Old model spellings -> their `cd.models.load` names (``demo``/``sample`` ``mnist``; ``adaptive``/``compare`` ``ddpm``, ``flow``)."""


def model_name(choices: Sequence[str] | None = None) -> Callable[[str], str]:
    """An argparse type: a `cd.models.load` name, the old spellings of `MODEL_ALIASES` mapped to it.

    Args:
        choices: the names accepted (``None``: any, e.g. a diffusers folder or Hub id).

    Examples:
        >>> model_name(["mnist-ddpm", "mnist-flow"])("ddpm")
        'mnist-ddpm'
    """

    def parse(text: str) -> str:
        name = MODEL_ALIASES.get(text, text)
        if choices is not None and name not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return name

    parse.__name__ = "model name"
    return parse


def add_alias(parser: argparse.ArgumentParser, *old: str, dest: str, parse: Callable[[str], Any] | None = None) -> argparse.Action:
    """Register the old option strings ``old`` of the option stored in ``dest``, hidden from ``--help``.

    The alias takes its values as the option does (its ``nargs``, ``type``, ``choices``, action
    class) unless ``parse`` (a type replacing the option's type and choices) is given, and has no default of its own, so it only ever changes
    ``dest`` when used.

    Examples:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--batch-size", type=int, default=1, help="samples per batch")
        >>> _ = add_alias(p, "--batch", dest="batch_size")
        >>> p.parse_args(["--batch", "4"]).batch_size, p.parse_args([]).batch_size, "--batch " in p.format_help()
        (4, 1, False)
    """
    action = next((a for a in parser._actions if a.dest == dest and a.help is not argparse.SUPPRESS), None)
    if action is None:
        raise ValueError(f"add_alias: {parser.prog} has no option stored in {dest!r}")
    cls = action.__class__  # store, store_true, extend, ...
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {key: getattr(action, key) for key in ("nargs", "const", "type", "choices", "metavar") if key in accepted}
    if parse is not None:
        kwargs["type"], kwargs["choices"] = parse, None
    return parser.add_argument(*old, dest=dest, action=cls, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def shown_options(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings ``--help`` shows (aliases and internal options left out)."""
    return [s for a in parser._actions if a.help is not argparse.SUPPRESS for s in a.option_strings]


def _rows(parsers: Mapping[str, argparse.ArgumentParser]) -> list[tuple[str, argparse.ArgumentParser]]:
    """``(command, parser)`` per sub-command, a row per nested command for those that have them (``analyze``)."""
    rows = []
    for name, parser in parsers.items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        rows += [(f"{name} {sub}", p) for sub, p in nested[0].choices.items()] if nested else [(name, parser)]
    return rows


def alias_table(parsers: Mapping[str, argparse.ArgumentParser]) -> str:
    """The markdown table of the old spellings each sub-command still accepts (hidden from ``--help``) and their new one."""
    lines = ["| command | old spelling | spelled now |", "|---|---|---|"]
    for name, parser in _rows(parsers):
        shown = {a.dest: a.option_strings[0] for a in parser._actions if a.help is not argparse.SUPPRESS and a.option_strings}
        for action in parser._actions:
            if action.help is argparse.SUPPRESS and action.dest in shown:
                lines += [f"| `{name}` | `{old}` | `{shown[action.dest]}` |" for old in action.option_strings]
    return "\n".join(lines)


def flag_table(parsers: Mapping[str, argparse.ArgumentParser]) -> str:
    """The markdown table of sub-command x shared concept: the spelling each sub-command shows, ``—`` where it has none.

    A sub-command with nested commands (``analyze``) gets a row per nested command.
    """
    head = ["command", *(" / ".join(c) for c in SHARED)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, parser in _rows(parsers):
        shown = set(shown_options(parser))
        cells = [" ".join(f"`{s}`" for s in concept if s in shown) or "—" for concept in SHARED]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def out_file(out: Path, name: str) -> Path:
    """The file a command writes for ``--out``: ``out/name`` for a folder, ``out`` itself if it ends in ``name``'s suffix.

    ``--out`` is a folder in every sub-command; one that wrote a single file before still accepts
    that file's path (``--out a.png``), as documented in its ``--help``.

    Raises:
        ValueError: a path above the file is a file, not a folder.

    Examples:
        >>> out_file(Path("runs"), "sample.png").as_posix(), out_file(Path("a.PNG"), "sample.png").as_posix()
        ('runs/sample.png', 'a.PNG')
    """
    path = out if out.suffix.lower() == Path(name).suffix.lower() else out / name
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out: {parent} is a file, not a folder")
    return path


def docs_block() -> str:
    """The ``CLI-FLAGS`` block of ``docs/cli.md``: `flag_table` and `alias_table` of every sub-command (imports them all)."""
    from constrained_diffusion.cli.commands import subparsers
    from constrained_diffusion.cli.main import build_parser

    parsers = subparsers(build_parser())
    return f"{flag_table(parsers)}\n\nThe old spellings, still accepted and hidden from `--help`:\n\n{alias_table(parsers)}"


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` of a command that prints a line per finished piece of work (`progress_log` reads it)."""
    parser.add_argument("--quiet", action="store_true", help="no progress lines: only the results and the paths written")


def progress_log(args: argparse.Namespace) -> Callable[[str], object]:
    """``print``, or a function that prints nothing with ``--quiet``: the ``log`` a command passes to a long run."""
    return (lambda line: None) if getattr(args, "quiet", False) else print


AUTO = "auto"
"""The ``--device`` default: resolved to `default_device` when the command runs, not when ``--help`` is built (torch-free)."""


def device_or_auto(text: str) -> str:
    """``--device``: `constrained_diffusion.cli.args.device_name`, and ``auto`` (the default) = cuda where available, else cpu.

    argparse passes a string default through the type at the end of parsing, so the default
    costs a torch import only when a command runs.
    """
    from constrained_diffusion.cli.args import default_device, device_name

    return default_device() if text == AUTO else device_name(text)


device_or_auto.__name__ = "device"


if __name__ == "__main__":  # python -m constrained_diffusion.cli.vocabulary: rewrite the block of docs/cli.md
    from constrained_diffusion.utils.tables import write_block

    write_block(Path(__file__).resolve().parents[2] / "docs" / "cli.md", "CLI-FLAGS", docs_block())
