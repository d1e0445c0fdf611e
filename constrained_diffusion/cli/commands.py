"""The sub-commands of ``constrained-diffusion``, registered lazily so that ``--help`` answers without torch.

Each sub-command lives in ``constrained_diffusion/cli/<module>.py`` with an ``add_parser(sub)``
function; those modules import torch and the library at their top. `COMMANDS` names each one
and its one-line help, which is all the top-level ``--help`` shows, and `LazyParser` adds a
sub-command's options (importing its module) only when that sub-command is parsed or its help
is printed. `load_all` builds every sub-command's options (the docs' flag table, the tests).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any, NoReturn

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "inpaint real test digits with every method at its tuned setting; writes OUT/demo.png"),
    "sample": ("sample", "sample under a named constraint with a named recipe or solver"),
    "bench": ("bench", "seconds per sample and overhead over the forward-pass floor, per solver; prints a table (--write-docs PAGE: into that page)"),
    "bench-sd": ("bench_sd", "seconds per inner step and peak memory on the full SD 1.x UNet; prints a table (--write-docs PAGE: into that page)"),
    "train": ("train", "train the MNIST diffusion, flow or classifier model; writes checkpoints, a log and the weights under --out"),
    "evaluate": ("evaluate", "evaluate methods on an image set: records.jsonl, summary.md, grid.png"),
    "tune": ("tune", "tune a method's hyper-parameters with Optuna (resumable, shareable study)"),
    "tune-study": ("tune_study", "the fair comparison: tune every method equally, score on held-out digits; "
                                 "writes OUT/table.md, OUT/results.json, OUT/figures/ (OUT default runs/tuning)"),
    "compare": ("compare", "PSNR/SSIM/label accuracy/cost table of the solvers on MNIST (equal steps, equal time); "
                           "runs of the evaluation harness under OUT/<model>/<task>/"),
    "analyze": ("analyze", "Jacobian analysis: J vs J^-1 eigenvectors, Newton-direction alignment; prints tables, writes figures (see each analysis' --help)"),
    "adaptive": ("adaptive", "adaptive inner loop vs fixed inner steps (PSNR vs NFE) on MNIST"),
    "model-card": ("model_card", "measure a shipped MNIST model for its model card; prints the numbers (--write-docs PAGE: into the card)"),
}
"""Sub-command -> (its module under ``constrained_diffusion.cli``, the one-line help of the top-level ``--help``)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class LazyParser(Parser):
    """A sub-command's parser whose options are added by its module's ``add_parser`` on first use.

    Args:
        module: the module under ``constrained_diffusion.cli`` that registers the options
            (``None``: an ordinary parser, e.g. the nested parsers of ``analyze``).
    """

    def __init__(self, *args: Any, module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module = module

    def load(self) -> LazyParser:
        """Import the sub-command's module and add its options (once); returns ``self``."""
        if self._module is not None:
            module, self._module = self._module, None
            importlib.import_module(f"constrained_diffusion.cli.{module}").add_parser(_Into(self))
        return self

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        self.load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.load()
        return super().format_help()

    def format_usage(self) -> str:
        self.load()
        return super().format_usage()


class _Into:
    """Stands in for the sub-parsers action in a module's ``add_parser(sub)``: returns the already registered parser."""

    def __init__(self, parser: LazyParser) -> None:
        self._parser = parser

    def add_parser(self, name: str, **kwargs: Any) -> LazyParser:
        kwargs.pop("help", None)  # the top-level listing shows COMMANDS' help (tests/test_cli_vocabulary.py keeps them equal)
        kwargs.pop("aliases", None)
        for key, value in kwargs.items():
            setattr(self._parser, key, value)
        return self._parser


def add_commands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """Register every sub-command of `COMMANDS` on ``parser`` without importing any of their modules."""
    sub = parser.add_subparsers(dest="command", required=True, parser_class=LazyParser)
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, module=module)
    return sub


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` by name, every one loaded (imports every sub-command's module)."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p.load() if isinstance(p, LazyParser) else p for name, p in action.choices.items()}
