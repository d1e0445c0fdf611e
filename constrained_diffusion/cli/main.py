"""Entry point of ``constrained-diffusion``: parses arguments and dispatches to a sub-command.

Every user error (a bad flag, an invalid value) ends with exit status 2 and one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from pydantic import ValidationError

from constrained_diffusion.cli import adaptive, analyze, bench, bench_sd, compare, demo, evaluate, model_card, sample, train, tune, tune_study
from constrained_diffusion.training.checkpoint import RunInUseError


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "value"
            parts.append(f"{loc}: {err['msg']}")
        return "; ".join(parts)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    """The ``constrained-diffusion`` parser with every sub-command."""
    parser = _Parser(prog="constrained-diffusion", description="Training-free constrained sampling from diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo.add_parser(sub)
    sample.add_parser(sub)
    bench.add_parser(sub)
    bench_sd.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    tune.add_parser(sub)
    tune_study.add_parser(sub)
    compare.add_parser(sub)
    analyze.add_parser(sub)
    adaptive.add_parser(sub)
    model_card.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, TypeError, ValidationError, FileNotFoundError, FloatingPointError, RunInUseError) as exc:
        print(f"constrained-diffusion {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
