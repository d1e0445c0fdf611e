"""``bench-sd --suite gpu``: run the GPU suite's parts under their caps, then the report and the docs block.

The measurements are `constrained_diffusion.benchmarks.gpu_suite`'s; this module drives the
parts (one process each: ``bench-sd --suite-part NAME``), renders each part's record as
markdown as soon as it ends, and writes ``report.md``, ``summary.json`` and ``docs_block.md``
(``--write-docs PAGE`` replaces the ``GPU-SUITE`` block of ``PAGE`` with it). ``scripts/gpu_check.sh``
is the thin shell wrapper a GPU session runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from constrained_diffusion.benchmarks import gpu_suite
from constrained_diffusion.cli.args import format_table, write_block

COMMAND = "scripts/gpu_check.sh out/gpu"
"""The documented command (on a CUDA machine; ``--tiny`` for the CPU dry run)."""


def parse_caps(values: list[str]) -> dict[str, float]:
    """``["sd15-batch1=120"]`` -> ``{"sd15-batch1": 120.0}``.

    Raises:
        ValueError: not ``PART=SECONDS``, an unknown part or a cap that is not a positive number.
    """
    caps: dict[str, float] = {}
    for value in values:
        name, _, seconds = value.partition("=")
        if name not in gpu_suite.PART_NAMES:
            raise ValueError(f"--cap: unknown part {name!r} in {value!r}; expected PART=SECONDS with PART one of "
                             f"{', '.join(gpu_suite.PART_NAMES)}")
        try:
            caps[name] = float(seconds)
        except ValueError:
            caps[name] = -1.0
        if not caps[name] > 0:
            raise ValueError(f"--cap: {value!r}: the seconds must be a number > 0")
    return caps


def run_suite(args: argparse.Namespace) -> int:
    """Run the selected parts (unless ``--report-only``), then write the report; exit status 0."""
    out: Path = args.out
    try:
        caps = parse_caps(args.cap)
    except ValueError as exc:
        print(f"bench-sd: error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    # a part runs in its own session (so its cap kills all it started); stopping the driver must stop it too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    selected = [p for p in gpu_suite.PARTS if args.parts is None or p.name in args.parts]
    stopped = False
    if not args.report_only:
        error = _mixed_run_error(out, selected, args.tiny)
        if error is not None:
            print(f"bench-sd: error: {error}", file=sys.stderr)
            return 2
        for part in selected:
            stopped = _run_part(part, out, caps.get(part.name, part.cap_s), args)
            if stopped:
                break
    _write_report(out, args)
    return 143 if stopped else 0


def _mixed_run_error(out: Path, selected: list[gpu_suite.Part], tiny: bool) -> str | None:
    """Why ``out`` cannot take this run (it holds a part run with the other ``--tiny``), or ``None``."""
    settings = dataclasses.asdict(gpu_suite.settings_for(tiny))
    for part in selected:
        old = gpu_suite.read_part(out, part.name)
        if old is not None and old.get("settings", {}).get("tiny", tiny) != settings["tiny"]:
            return f"{out} holds a {'tiny' if old['settings']['tiny'] else 'GPU'} run of {part.name}; use another --out folder"
    return None


def _run_part(part: gpu_suite.Part, out: Path, cap: float, args: argparse.Namespace) -> bool:
    """Run ``part`` in its own process under ``cap`` seconds (unless done and not ``--rerun``), record it; whether the suite was stopped."""
    old = gpu_suite.read_part(out, part.name)
    if old is not None and old.get("status") == "done" and not args.rerun:
        print(f"== {part.name}: kept from {out} (done; --rerun runs it again)", flush=True)
        return False
    print(f"== {part.name} (cap {cap:g} s, estimated {part.estimate_s:g} s on one H100): {part.title}", flush=True)
    cmd = [sys.executable, "-m", "constrained_diffusion", "bench-sd", "--suite-part", part.name, "--out", str(out),
           "--deadline", f"{max(cap - 5, 0.5 * cap):g}", *(["--tiny"] if args.tiny else [])]
    start = time.monotonic()
    stopped = False
    try:
        outcome = gpu_suite.run_process(part.name, cmd, cap, out / "suite.log")
    except SystemExit:  # SIGTERM (an outer timeout): the part's group is gone; record it, write the report, stop
        outcome, stopped = gpu_suite.PartOutcome(part.name, None, time.monotonic() - start, timed_out=True), True
    data = gpu_suite.close_part(out, part, outcome, cap)
    if stopped:
        data["status"], data["reason"] = "stopped", "the suite was terminated while this part ran; finished rows are kept"
        gpu_suite.write_atomic(gpu_suite.part_path(out, part.name), json.dumps(data, indent=1))
    gpu_suite.write_atomic(gpu_suite.part_path(out, part.name, ".md"), render_part(data))
    print(f"== {part.name}: {data['status']} in {outcome.seconds:.1f} s"
          + (f" ({data['reason']})" if data.get("reason") else ""), flush=True)
    return stopped


def _write_report(out: Path, args: argparse.Namespace) -> None:
    """Write ``report.md``, ``docs_block.md`` and ``summary.json`` from the parts ``out`` holds, print the report, fill ``--write-docs``."""
    parts = {p.name: gpu_suite.read_part(out, p.name) for p in gpu_suite.PARTS}
    for name, data in parts.items():
        if data is not None and args.report_only:
            gpu_suite.write_atomic(gpu_suite.part_path(out, name, ".md"), render_part(data))
    recorded = [d["settings"]["tiny"] for d in parts.values() if d is not None and "tiny" in d.get("settings", {})]
    tiny = any(recorded) if recorded else args.tiny  # --report-only: what the folder holds, whatever the flag
    targets = gpu_suite.evaluate_targets(parts)
    report = render_report(parts, targets, tiny=tiny)
    gpu_suite.write_atomic(out / "report.md", report)
    gpu_suite.write_atomic(out / "docs_block.md", report)
    summary = {"command": COMMAND + (" --tiny" if tiny else ""), "written": _now(),
               "parts": {n: None if d is None else {k: d.get(k) for k in ("status", "reason", "elapsed_s", "wall_s", "cap_s",
                                                                          "estimate_s", "device")}
                         for n, d in parts.items()},
               "targets": [dataclasses.asdict(t) for t in targets]}
    gpu_suite.write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    print(report)
    if args.write_docs is not None:
        write_block(args.write_docs, args.block or "GPU-SUITE", report)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _f(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_part(data: dict[str, Any]) -> str:
    """A part's record as markdown: status, settings, then its table."""
    head = [f"#### {data.get('part')}: {data.get('title', '')}", "",
            f"Status **{data.get('status')}**" + (f" ({data['reason']})" if data.get("reason") else "")
            + f"; {_f(data.get('wall_s') or data.get('elapsed_s'), 1)} s of a {data.get('cap_s', 0):g} s cap "
            f"(estimated {data.get('estimate_s', 0):g} s on one H100); {data.get('device', '?')}, torch {data.get('torch', '?')}."]
    extra = data.get("extra") or {}
    name, rows = data.get("part"), data.get("rows", [])
    if name == "cuda-tests":
        if extra.get("summary"):
            head += ["", f"`pytest {extra.get('command', '').split('pytest', 1)[-1].strip()}`: {extra['summary']}"]
        if rows:
            head += ["", format_table(["test", "outcome", "message"], [[r["test"], r["outcome"], r["message"] or ""] for r in rows])]
        return "\n".join(head) + "\n"
    if name in ("sd15-batch1", "sd15-batch4"):
        forward = extra.get("forward_s") or {}
        if forward:
            head += ["", "One plain forward (median of 3 blocks): " + ", ".join(f"{m} {v * 1e3:.2f} ms" for m, v in forward.items()) + "."]
        cells = []
        for r in rows:
            if r.get("failure") or r.get("skipped"):
                cells.append([r["method"], r["mode"], str(r["batch"]), f"{'failed' if r.get('failure') else 'skipped'} "
                              f"({r.get('failure') or r.get('skipped')})", *["-"] * 7])
                continue
            cells.append([r["method"], r["mode"], str(r["batch"]), _f(r["min_s"]), _f(r["median_s"]), _f(r["per_image_s"]),
                          str(r["nfe"]), str(r["nbe"]), _f(r["peak_mb"], 0), _f(r.get("peak_allocated_mb"), 0), _f(r.get("warmup_s"), 1)])
        if cells:
            head += ["", format_table(["method", "mode", "batch", "min s", "median s", "median s / image", "NFE", "NBE",
                                       "peak MB above start", "peak MB allocated", "warm-up s"], cells)]
        return "\n".join(head) + "\n"
    cells = []
    plain_peak = {r["arch"]: r.get("peak_mb") for r in rows if r.get("name") == "plain" and not r.get("failure") and r.get("seconds")}
    for r in rows:
        if r.get("failure") or r.get("skipped"):
            cells.append([r["arch"], r["name"], f"{'failed' if r.get('failure') else 'skipped'} ({r.get('failure') or r.get('skipped')})",
                          *["-"] * 6])
            continue
        base = plain_peak.get(r["arch"])
        ratio = _f(r["peak_mb"] / base, 2) if base else "-"
        per_inner = r.get("per_inner_step_s")
        cells.append([r["arch"], r["name"], _f(r["median_s"]), "-" if per_inner is None else f"{per_inner * 1e3:.1f}",
                      str(r["nfe"]), str(r["nbe"]), _f(r["peak_mb"], 0), ratio, _f(r.get("peak_allocated_mb"), 0)])
    models = ", ".join(f"{k[6:-3]} {v:.0f} MB" for k, v in extra.items() if k.startswith("model_") and v is not None)
    if models:
        head += ["", f"Weights on the device: {models}."]
    if cells:
        head += ["", format_table(["model", "row", "median s (one step)", "ms per inner step", "NFE", "NBE", "peak MB above the model",
                                   "peak vs plain", "peak MB allocated"], cells)]
    return "\n".join(head) + "\n"


def render_report(parts: dict[str, dict[str, Any] | None], targets: list[gpu_suite.Target], tiny: bool = False) -> str:
    """The report: command, device, the targets, the parts' statuses, then every part's markdown."""
    devices = sorted({d["device"] for d in parts.values() if d is not None and d.get("device")})
    lines = ["```", COMMAND + (" --tiny" if tiny else ""), "```", "",
             f"Written {_now()}; device {', '.join(devices) or '?'}."
             + (" **Tiny CPU dry run: the numbers mean nothing.**" if tiny else ""), "",
             "**Targets (issue 25)**", "",
             format_table(["target", "verdict", "numbers"], [[f"{t.name}: {t.claim}", t.verdict, t.evidence] for t in targets]),
             "", "**Parts**", "",
             format_table(["part", "status", "wall s", "cap s", "estimated s (H100)", "note"], [_part_cells(p, parts[p.name]) for p in gpu_suite.PARTS])]
    for p in gpu_suite.PARTS:
        if parts[p.name] is not None:
            lines += ["", render_part(parts[p.name]).rstrip()]
    return "\n".join(lines) + "\n"


def _part_cells(part: gpu_suite.Part, data: dict[str, Any] | None) -> list[str]:
    data = data or {}
    return [part.name, data.get("status", "not run"), _f(data.get("wall_s"), 1), f"{data.get('cap_s', part.cap_s):g}",
            f"{part.estimate_s:g}", data.get("reason") or ""]
