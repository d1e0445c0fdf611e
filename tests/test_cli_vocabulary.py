"""One vocabulary across the CLI (issue 26): help on every flag, the docs' flag table, old spellings as hidden aliases, a torch-free --help."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from constrained_diffusion.cli import commands
from constrained_diffusion.cli.commands import COMMANDS, subparsers
from constrained_diffusion.cli.main import build_parser
from constrained_diffusion.cli.vocabulary import SHARED, docs_block, shown_options

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
OLD = ("--solver", "--batch", "--variants", "--recipe")
"""Old spellings that no sub-command may show in its help any more."""


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    loaded = subparsers(build_parser())
    rows = {}
    for name, parser in loaded.items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        rows[name] = parser
        if nested:
            rows.update({f"{name} {sub}": p for sub, p in nested[0].choices.items()})
    return rows


def test_every_flag_has_help_text(parsers):
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in parsers.items() for a in p._actions
               if a.help is not argparse.SUPPRESS and not (a.help or "").strip()]
    assert not missing, f"flags without help text: {missing}"


def test_no_sub_command_shows_an_old_spelling(parsers):
    shown = {name: sorted(set(shown_options(p)) & set(OLD)) for name, p in parsers.items()}
    assert not {k: v for k, v in shown.items() if v}


@pytest.mark.parametrize("argv, dest, value", [
    (["demo", "--solver", "identity"], "solver", ["identity"]),
    (["demo", "--method", "identity", "dps"], "solver", ["identity", "dps"]),
    (["sample", "--batch", "3"], "batch", 3),
    (["sample", "--recipe", "dps"], "recipe", "dps"),
    (["sample", "--model", "mnist"], "model", "mnist-ddpm"),
    (["bench", "--solver", "identity", "--method", "identity"], "methods", ["identity", "identity"]),
    (["compare", "--variants", "flow", "--device", "cpu"], "models", ["mnist-flow"]),
    (["compare", "--solvers", "identity", "--device", "cpu"], "methods", ["identity"]),
    (["adaptive", "--model", "ddpm", "--device", "cpu"], "model", "mnist-ddpm"),
    (["analyze", "secant", "--models", "ddpm", "flow"], "models", ["mnist-ddpm", "mnist-flow"]),
    (["analyze", "half-precision", "--models", "flow"], "models", ["mnist-flow"]),
    (["evaluate", "--method", "dps", "--method", "mpgd"], "method", ["dps", "mpgd"]),
    (["analyze", "batch-dependence", "--batch", "4"], "batch", 4),
])
def test_old_spellings_still_parse_to_the_new_option(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_an_alias_does_not_override_the_default():
    assert build_parser().parse_args(["sample"]).batch == 1
    assert build_parser().parse_args(["compare", "--device", "cpu"]).models == ["mnist-ddpm", "mnist-flow"]


def test_the_docs_table_is_the_parsers():
    block = re.search(r"<!-- CLI-FLAGS:START -->\n(.*?)\n<!-- CLI-FLAGS:END -->", PAGE.read_text(), re.S)
    assert block is not None
    assert block.group(1) == docs_block(), "regenerate it: python -m constrained_diffusion.cli.vocabulary"


def test_the_top_level_help_lists_each_module_s_own_help():
    """`COMMANDS` holds the one-line help the modules give (so --help need not import them)."""
    class Record:
        def add_parser(self, name, **kwargs):
            self.name, self.help = name, kwargs.get("help")
            return argparse.ArgumentParser(prog=name)

    import importlib

    for name, (module, help_text) in COMMANDS.items():
        record = Record()
        importlib.import_module(f"constrained_diffusion.cli.{module}").add_parser(record)
        assert (record.name, record.help) == (name, help_text)


def test_building_the_parser_and_help_import_no_torch():
    code = ("import sys, contextlib, io\nimport constrained_diffusion.cli.main as m\nm.build_parser()\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    m.main(['--help'])\n"
            "for c in ('demo', 'evaluate', 'train', 'adaptive', 'model-card'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n        m.main([c, '--help'])\n"
            "print(sorted(n for n in ('torch', 'numpy', 'pydantic') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_sub_command_s_options_load_once():
    parser = build_parser()
    evaluate = subparsers(parser)["evaluate"]
    assert isinstance(evaluate, commands.LazyParser)
    n = len(evaluate._actions)
    evaluate.load()
    assert len(evaluate._actions) == n and {"--model", "--out"} <= set(shown_options(evaluate))
    assert SHARED[0] == ("--model", "--models")


QUIET = ["demo", "sample", "evaluate", "tune", "tune-study", "compare", "adaptive", "analyze eigvec", "analyze fd-precision",
         "analyze half-precision", "analyze noisy", "analyze batch-dependence", "analyze secant", "analyze spectra",
         "analyze fd-vs-backprop"]
"""The commands that print progress while they run (a bar or a line per finished piece)."""


@pytest.mark.parametrize("name", QUIET)
def test_every_command_that_prints_progress_has_quiet(parsers, name):
    quiet = next(a for a in parsers[name]._actions if "--quiet" in a.option_strings)
    assert quiet.dest == "quiet" and quiet.default in (False, None) and quiet.nargs == 0


def test_quiet_silences_the_progress_lines(capsys):
    from constrained_diffusion.cli.vocabulary import progress_log

    progress_log(argparse.Namespace(quiet=True))("finished t=900")
    progress_log(argparse.Namespace(quiet=False))("finished t=700")
    assert capsys.readouterr().out == "finished t=700\n"


def test_the_device_default_is_resolved_when_the_command_runs():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for argv in (["adaptive"], ["model-card", "ddpm"], ["train", "ddpm"], ["compare"], ["bench-sd"]):
        assert build_parser().parse_args(argv).device == expected
    assert build_parser().parse_args(["adaptive", "--device", "cpu"]).device == "cpu"
