"""The GPU run of issue 25: one prepared suite that measures the method end to end on one H100/H200.

``scripts/gpu_check.sh OUT_DIR`` (= ``constrained-diffusion bench-sd --suite gpu --out OUT_DIR``)
runs four parts, each in its own process under its own time cap, most important numbers
first. Each part rewrites ``OUT_DIR/<part>.json`` after every row (atomically, `constrained_diffusion.utils.safe_io`:
temp file, fsync, rename), so a part killed at its cap keeps the rows it finished; the driver then marks
it ``"timed out"``, writes ``OUT_DIR/<part>.md`` and goes on with the next part. At the end it
writes ``OUT_DIR/report.md`` (the issue's four targets, met or not, with the numbers),
``OUT_DIR/summary.json`` and ``OUT_DIR/docs_block.md`` (the ``GPU-SUITE`` block of
``docs/benchmarks.md``, which ``--write-docs`` replaces).

Parts, their caps and the time each is expected to take on one H100, on paper. The per-pass
times are the H100 float16 figures of the ``SD-BENCH-TABLE`` block (one eager SD 1.5 forward
about 0.035 s at batch 1, a gradient-descent inner step 0.09 s, an exact-JVP one 0.30 s) and
public figures for compiled SD 1.5 (about 0.011 s per forward with CUDA graphs):

| part | cap s | est. s | what the estimate is made of |
|------|-------|--------|------------------------------|
| ``cuda-tests`` | 100 | 60 | 2 pytest starts 20, sync-debug cases 15, compiled case (tiny UNet) 20, half-precision JVP 5 |
| ``sd15-batch1`` | 200 | 170 | builds 20; eager plain 3, paper-inpainting 24; compile ~75, compiled rows 10; gradient descent 32 |
| ``step-memory`` | 60 | 40 | SD 1.5 and full-depth SD3 builds 2 x 8, one-step rows ~20 |
| ``sd15-batch4`` | 60 | 50 | build 10; eager plain 4, paper-inpainting 29; the rest while time lasts |

A whole-sample row is ~3.2 samples (3 timed runs and a 2-step warm-up): paper-inpainting eager
3.2 x 7.5 s, compiled 3.2 x 2.6 s, gradient descent eager 3.2 x 10 s; exact JVP (3.2 x 14 s)
and the compiled backward rows run only while the part's time lasts.

Total: caps 420 s (7 minutes), expected about 5.5 minutes. Within a part every row checks,
before it starts, that its estimated time (the measured forward time x the row's
forward-equivalents x runs, plus a compile allowance) fits before the part's deadline, and is
recorded as skipped otherwise, so a part usually ends by itself instead of at its cap. The
order puts the numbers the targets need first: the CUDA tests (the sync claim), SD 1.5 at
batch 1 (target 1 and 2), the one-step memory and per-inner-step rows of SD 1.5 and SD3 (target
3), then batch 4.

Every row runs once untimed on a 2-step version of the same method first (same shapes, so the
same compiled graph and cuDNN's kernel choice; cheaper than a whole warm-up sample), then
``runs`` timed whole samples with the device synchronised: min and median seconds, NFE, NBE,
the allocator's peak above the level before the timed runs and its absolute peak. The compiled
rows use ``torch.compile(mode="reduce-overhead")`` (CUDA graphs), the one mode that fits: the
CPU tests (``tests/test_compiled.py``) show that the two forwards of a finite difference share
one static-shape graph, so one captured CUDA graph replays for every forward of a sample, which
removes the launch overhead that dominates a batch-1 forward; ``"max-autotune"`` would spend
minutes autotuning, more than the whole budget, and ``"default"`` keeps the launches.

``--tiny``: the same parts on tiny widths on the CPU (1 step of 1 inner step, 2 timed runs,
the ``eager`` compile backend: dynamo's graph capture without code generation), the CUDA tests
skipped: a dry run of every code path in well under a minute, numbers meaningless.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from constrained_diffusion.benchmarks.architectures import build_denoiser
from constrained_diffusion.benchmarks.end_to_end import method_run, time_runs
from constrained_diffusion.constraints import Inpainting
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.sampling import ConstrainedSampler
from constrained_diffusion.utils.safe_io import write_text


@dataclass(frozen=True)
class Part:
    """One part of the suite.

    Attributes:
        name: file stem of its outputs (``OUT_DIR/<name>.json``, ``.md``).
        title: one line for the report.
        cap_s: the wall-clock cap of its process.
        estimate_s: its expected time on one H100 (module docstring).
    """

    name: str
    title: str
    cap_s: float
    estimate_s: float


PARTS: tuple[Part, ...] = (
    Part("cuda-tests", "CUDA tests: sync-debug inner loop (every solver and step rule), compiled CUDA cases, "
         "half-precision exact JVP", 100, 60),
    Part("sd15-batch1", "SD 1.5 (random weights), 512x512, float16, batch 1: whole samples, eager and compiled", 200, 170),
    Part("step-memory", "One denoising step of 4 inner steps: SD 1.5 UNet float16 and SD3 Medium (full depth) bfloat16: "
         "seconds per inner step and peak memory", 60, 40),
    Part("sd15-batch4", "SD 1.5, 512x512, float16, batch 4: seconds per image", 60, 50),
)
PART_NAMES: tuple[str, ...] = tuple(p.name for p in PARTS)

CUDA_TEST_FILES: tuple[str, ...] = ("tests/test_sync_free.py", "tests/test_compiled.py")
"""The files whose tests named ``*cuda*`` part ``cuda-tests`` runs (``pytest -k cuda``)."""

E2E_COST: dict[str, float] = {"plain": 1.0, "paper-inpainting": 11.0, "gradient-descent": 16.0, "exact-jvp": 21.0}
"""Forward-equivalents per denoising step of each method at 5 inner steps (a backward ~ 2 forwards,
a forward-mode JVP ~ 3), for the rows' time estimates."""
COMPILE_ALLOWANCE_S = 90.0
"""What the first compiled row of a model is assumed to spend compiling (inductor, SD 1.5 UNet)."""
STEP_ROWS: tuple[str, ...] = ("plain", "inexact-newton", "gradient-descent", "exact-jvp")


@dataclass(frozen=True)
class SuiteSettings:
    """What the suite measures with (`GPU` on a CUDA device, `TINY` for the CPU dry run).

    Attributes:
        device: ``"cuda"`` or ``"cpu"``.
        tiny: tiny widths (`build_denoiser`).
        size: latent side (64: 512x512 images).
        steps: denoising steps of the whole samples (the recipes' 20).
        warmup_steps: steps of the untimed warm-up sample of each row.
        inner_steps: inner steps of the whole samples (``None``: the recipe's 5).
        runs: timed whole samples per row.
        dtype: the SD 1.5 rows' dtype.
        compile_mode: ``torch.compile`` mode of the compiled rows.
        compile_backend: ``torch.compile`` backend of the compiled rows.
        step_inner_steps: inner steps of the one-step rows (``step-memory``).
        transformer_dtype: SD3's dtype.
        transformer_depth: SD3's blocks (``None``: all 24).
        forward_repeats: forwards timed for the plain forward time.
    """

    device: str = "cuda"
    tiny: bool = False
    size: int = 64
    steps: int = 20
    warmup_steps: int = 2
    inner_steps: int | None = None
    runs: int = 3
    dtype: str = "float16"
    compile_mode: str | None = "reduce-overhead"
    compile_backend: str = "inductor"
    step_inner_steps: int = 4
    transformer_dtype: str = "bfloat16"
    transformer_depth: int | None = None
    forward_repeats: int = 20


GPU = SuiteSettings()
TINY = SuiteSettings(device="cpu", tiny=True, size=4, steps=1, warmup_steps=1, inner_steps=1, runs=2, dtype="float32",
                     compile_mode=None, compile_backend="eager", step_inner_steps=1, transformer_dtype="float32",
                     transformer_depth=1, forward_repeats=1)


def settings_for(tiny: bool) -> SuiteSettings:
    """`TINY` or `GPU`."""
    return TINY if tiny else GPU


# --- outputs ------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through the package's one atomic writer (`constrained_diffusion.utils.safe_io`)."""
    write_text(path, text)


def part_path(out: Path, name: str, suffix: str = ".json") -> Path:
    """``OUT_DIR/<name><suffix>``."""
    return Path(out) / f"{name}{suffix}"


def read_part(out: Path, name: str) -> dict[str, Any] | None:
    """A part's record, or ``None`` when its file is missing or unreadable."""
    try:
        return json.loads(part_path(out, name).read_text())
    except (OSError, ValueError):
        return None


def device_description(device: str) -> str:
    """The GPU's name on CUDA, else the CPU threads."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return f"{torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}"


class PartRecord:
    """A part's JSON record, rewritten (atomically) after every change.

    Args:
        out: the output folder.
        part: the part.
        settings: the suite's settings (stored with the rows).
        deadline: ``time.monotonic()`` by which the part should end (rows that would not fit are skipped).
    """

    def __init__(self, out: Path, part: Part, settings: SuiteSettings, deadline: float) -> None:
        self.path, self.deadline, self.start = part_path(out, part.name), deadline, time.monotonic()
        self.data: dict[str, Any] = {
            "part": part.name, "title": part.title, "status": "running", "reason": None, "cap_s": part.cap_s,
            "estimate_s": part.estimate_s, "elapsed_s": 0.0, "device": device_description(settings.device),
            "torch": torch.__version__, "settings": asdict(settings), "rows": [], "extra": {},
        }
        self.save()

    def save(self) -> None:
        """Rewrite the file."""
        self.data["elapsed_s"] = round(time.monotonic() - self.start, 2)
        write_atomic(self.path, json.dumps(self.data, indent=1))

    def add(self, row: dict[str, Any]) -> None:
        """Append a row and save."""
        self.data["rows"].append(row)
        self.save()

    def set(self, **extra: Any) -> None:
        """Store ``extra`` entries and save."""
        self.data["extra"].update(extra)
        self.save()

    def left(self) -> float:
        """Seconds left before the deadline."""
        return self.deadline - time.monotonic()

    def finish(self, status: str = "done", reason: str | None = None) -> None:
        """Mark the part finished."""
        self.data["status"], self.data["reason"] = status, reason
        self.save()


# --- part 1: the CUDA tests ----------------------------------------------------------------------


def repo_root() -> Path:
    """The checkout that holds ``tests/`` (the package's parent folder)."""
    return Path(__file__).resolve().parents[2]


def cuda_tests(record: PartRecord, settings: SuiteSettings, out: Path) -> None:
    """``pytest -k cuda`` over `CUDA_TEST_FILES` (junit XML under ``out``); skipped without CUDA."""
    if torch.device(settings.device).type != "cuda" or not torch.cuda.is_available():
        record.finish("skipped", "no CUDA device: the CUDA tests need one (the CPU suite runs them as skips)")
        return
    root = repo_root()
    missing = [f for f in CUDA_TEST_FILES if not (root / f).exists()]
    if missing:
        record.finish("skipped", f"not a checkout: {', '.join(missing)} missing under {root}")
        return
    codes, summaries = [], []
    for path in CUDA_TEST_FILES:  # one pytest per file, the sync tests first: a file cut off at the deadline keeps the others
        xml = part_path(out, Path(path).stem, ".xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rA", "-k", "cuda",
               f"--junitxml={xml}", path]
        try:
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=max(record.left(), 1.0))
        except subprocess.TimeoutExpired:
            record.data["rows"].append({"test": f"{path}::(all)", "outcome": "error", "message": "cut off at the part's deadline"})
            codes.append(-1)
            summaries.append(f"{path}: cut off at the part's deadline")
            record.save()
            continue
        print(proc.stdout[-5000:], proc.stderr[-1500:], sep="\n", flush=True)
        record.data["rows"] += junit_cases(xml)
        codes.append(proc.returncode)
        summaries.append(f"{path}: " + (proc.stdout.strip().splitlines() or [""])[-1].strip("= "))
        record.set(command="python -m pytest -q -o addopts= -k cuda FILE", returncodes=codes, summary="; ".join(summaries))
    ok = all(c == 0 for c in codes)
    record.finish("done" if ok else "failed", None if ok else f"pytest exit statuses {codes}")


def junit_cases(xml: Path) -> list[dict[str, Any]]:
    """``[{test, outcome, message}]`` from a pytest junit XML file (empty when it is missing)."""
    import xml.etree.ElementTree as ET

    try:
        tree = ET.parse(xml)
    except (OSError, ET.ParseError):
        return []
    cases = []
    for case in tree.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "").splitlines()[0][:200] if node.get("message") else ""
                break
        cases.append({"test": f"{case.get('classname', '')}::{case.get('name', '')}", "outcome": outcome, "message": message})
    return cases


# --- parts 2 and 4: whole samples on SD 1.5 --------------------------------------------------------


def sd15_plan(batch: int) -> list[tuple[str, str]]:
    """``(mode, method)`` rows in order of importance for ``batch``."""
    first = [("eager", "plain"), ("eager", "paper-inpainting"), ("compiled", "paper-inpainting"), ("compiled", "plain")]
    if batch == 1:
        return [*first, ("eager", "gradient-descent"), ("eager", "exact-jvp"), ("compiled", "gradient-descent"),
                ("compiled", "exact-jvp")]
    return [("eager", "plain"), ("eager", "paper-inpainting"), ("eager", "gradient-descent"), ("compiled", "plain"),
            ("compiled", "paper-inpainting")]


TINY_SKIPS: frozenset[tuple[int, str, str]] = frozenset({
    (1, "compiled", "gradient-descent"), (1, "compiled", "exact-jvp"), (4, "compiled", "plain"), (4, "compiled", "paper-inpainting"),
})
"""Rows the tiny dry run records as skipped: the same code as rows it runs, whose graph captures
(backward, forward AD, a second batch shape) would cost most of its minute on two CPU cores."""


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def forward_time(den: Denoiser, batch: int, repeats: int, device: str) -> float:
    """Median seconds of one plain forward ``D(x_t, t)`` of a ``batch`` (3 blocks of ``repeats``, after 2 warm-up calls)."""
    x = torch.randn(batch, *den.sample_shape, generator=torch.Generator().manual_seed(3)).to(den.device, den.dtype)
    t = den.grid(10).times[5]
    blocks = []
    with torch.no_grad():
        for _ in range(2):
            den(x, t)
        for _ in range(3):
            _sync(device)
            start = time.perf_counter()
            for _ in range(repeats):
                den(x, t)
            _sync(device)
            blocks.append((time.perf_counter() - start) / repeats)
    return statistics.median(blocks)


def _failure(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:160]


def sd15_part(record: PartRecord, settings: SuiteSettings, batch: int) -> None:
    """Whole samples of each `sd15_plan` row (see the module docstring); one row at a time into ``record``."""
    s = settings
    models: dict[str, Denoiser] = {}
    compiled_kinds: set[str] = set()
    forward_s: dict[str, float] = {}
    for mode, method in sd15_plan(batch):
        row: dict[str, Any] = {"method": method, "mode": mode, "batch": batch, "dtype": s.dtype, "steps": s.steps,
                               "seconds": [], "failure": None, "skipped": None}
        if s.tiny and (batch, mode, method) in TINY_SKIPS:
            row["skipped"] = "tiny dry run: the code path of the rows above, without another graph capture"
            record.add(row)
            continue
        base = forward_s.get("eager")
        if base is not None:
            factor = 1.0 if mode == "eager" else 0.4
            estimate = base * s.steps * E2E_COST[method] * factor * (s.runs + s.warmup_steps / s.steps)
            kind = "backward" if method == "gradient-descent" else "forward-ad" if method == "exact-jvp" else "forward"
            if mode == "compiled" and kind not in compiled_kinds:
                estimate += COMPILE_ALLOWANCE_S if not s.tiny else 0.0
            row["estimate_s"] = round(estimate, 1)
            if estimate > record.left():
                row["skipped"] = f"not enough time left in the part (estimated {estimate:.0f} s, {max(record.left(), 0):.0f} s left)"
                record.add(row)
                continue
        try:
            if mode not in models:
                options = ({"compile": True, "compile_mode": s.compile_mode, "compile_backend": s.compile_backend}
                           if mode == "compiled" else {})
                start = time.perf_counter()
                models[mode] = build_denoiser("sd15", s.size, s.device, s.dtype, tiny=s.tiny, **options)
                record.set(**{f"build_{mode}_s": round(time.perf_counter() - start, 2)})
                start = time.perf_counter()
                forward_s[mode] = forward_time(models[mode], batch, s.forward_repeats, s.device)
                record.set(forward_s=forward_s, **{f"first_forwards_{mode}_s": round(time.perf_counter() - start, 2)})
            den = models[mode]
            if mode == "compiled":
                compiled_kinds.add("backward" if method == "gradient-descent" else "forward-ad" if method == "exact-jvp" else "forward")
            precision_aware = s.dtype != "float32"
            warm = method_run(method, den, s.warmup_steps, batch, precision_aware, s.inner_steps)
            run = method_run(method, den, s.steps, batch, precision_aware, s.inner_steps)
            start = time.perf_counter()
            seconds, result, peak = time_runs(run, s.device, s.runs, warmup=warm)
            row["warmup_s"] = round(time.perf_counter() - start - sum(seconds), 2)
            row.update(seconds=seconds, min_s=min(seconds), median_s=statistics.median(seconds),
                       per_image_s=statistics.median(seconds) / batch, nfe=result.nfe, nbe=result.nbe, peak_mb=peak,
                       peak_allocated_mb=_max_allocated(s.device))
        except Exception as exc:  # a method this model, dtype or mode cannot run is a row, not fatal
            row["failure"] = _failure(exc)
        record.add(row)
        print(f"[{record.data['part']}] {mode} {method} batch {batch}: "
              + (row["failure"] or f"median {row.get('median_s', float('nan')):.3f} s, NFE {row.get('nfe')}, NBE {row.get('nbe')}"),
              flush=True)
    record.finish()


def _max_allocated(device: str) -> float | None:
    """The allocator's absolute peak (MB) since `PeakMemory` last reset it; ``None`` off CUDA."""
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20


# --- part 3: one denoising step, SD 1.5 and SD3 ---------------------------------------------------


def step_part(record: PartRecord, settings: SuiteSettings) -> None:
    """Plain, inexact Newton, gradient descent, exact JVP: one step of ``step_inner_steps`` inner steps per row.

    SD 1.5's UNet (``settings.dtype``), then SD3 Medium (``transformer_dtype``, ``transformer_depth``
    blocks), each built once; every row warms up once and times ``runs`` steps. Seconds per inner
    step: ``(median - plain median) / K``; peak: the allocator's peak above the level before the
    timed runs.
    """
    s, K = settings, settings.step_inner_steps
    for arch, dtype, depth in (("sd15", s.dtype, None), ("sd3", s.transformer_dtype, s.transformer_depth)):
        try:
            start = time.perf_counter()
            den = build_denoiser(arch, s.size, s.device, dtype, depth=depth, tiny=s.tiny)
            record.set(**{f"build_{arch}_s": round(time.perf_counter() - start, 2),
                          f"model_{arch}_mb": _allocated(s.device)})
        except Exception as exc:
            record.add({"arch": arch, "name": "build", "failure": _failure(exc)})
            continue
        g = torch.Generator().manual_seed(2)
        x_T = torch.randn(1, *den.sample_shape, generator=g).to(den.device, den.dtype)
        y = torch.randn(1, *den.sample_shape, generator=g).to(den.device, den.dtype)
        mask = torch.zeros(1, 1, *den.sample_shape[1:], device=den.device, dtype=den.dtype)
        mask[..., : den.sample_shape[-1] // 2] = 1
        constraint = Inpainting(y, mask)
        plain_median = None
        for name in STEP_ROWS:
            row: dict[str, Any] = {"arch": arch, "dtype": dtype, "depth": depth, "name": name, "inner_steps": 0 if name == "plain" else K,
                                   "seconds": [], "failure": None, "skipped": None}
            if plain_median is not None:
                estimate = plain_median * (1 + 4 * K) * (s.runs + 1)
                if estimate > record.left():
                    row["skipped"] = f"not enough time left in the part (estimated {estimate:.0f} s)"
                    record.add(row)
                    continue
            try:
                sampler = ConstrainedSampler(den, "inexact-newton" if name == "plain" else name, steps=1,
                                             inner_steps=0 if name == "plain" else K)
                run = lambda sampler=sampler, c=constraint, x=x_T: sampler.sample(c, x_T=x, progress=False)  # noqa: E731
                seconds, result, peak = time_runs(run, s.device, s.runs)
                row.update(seconds=seconds, min_s=min(seconds), median_s=statistics.median(seconds), nfe=result.nfe,
                           nbe=result.nbe, peak_mb=peak, peak_allocated_mb=_max_allocated(s.device))
                if name == "plain":
                    plain_median = row["median_s"]
                elif plain_median is not None:
                    row["per_inner_step_s"] = (row["median_s"] - plain_median) / K
            except Exception as exc:
                row["failure"] = _failure(exc)
            record.add(row)
            print(f"[step-memory] {arch} {name}: " + (row["failure"] or f"median {row.get('median_s', 0):.3f} s, "
                                                      f"peak {row.get('peak_mb', 0):.0f} MB"), flush=True)
        del den
        if torch.device(s.device).type == "cuda":
            torch.cuda.empty_cache()
    record.finish()


def _allocated(device: str) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.memory_allocated(torch.device(device)) / 2**20


# --- one part in this process ------------------------------------------------------------------------


def run_part(name: str, out: Path, tiny: bool = False, deadline_s: float | None = None) -> dict[str, Any]:
    """Run part ``name`` in this process, writing ``out/<name>.json`` as it goes; returns the record.

    Args:
        name: one of `PART_NAMES`.
        out: the output folder.
        tiny: `TINY` settings instead of `GPU`.
        deadline_s: seconds this part may take (default: its cap less 5 s); rows that would not
            fit are skipped.

    Raises:
        ValueError: an unknown part.
    """
    parts = {p.name: p for p in PARTS}
    if name not in parts:
        raise ValueError(f"part must be one of {PART_NAMES}, got {name!r}")
    part, settings = parts[name], settings_for(tiny)
    if not tiny and not torch.cuda.is_available():
        settings = replace(settings, device="cpu")  # recorded as such; the CUDA part skips itself
    budget = deadline_s if deadline_s is not None else part.cap_s - 5
    record = PartRecord(Path(out), part, settings, time.monotonic() + budget)
    try:
        if name == "cuda-tests":
            cuda_tests(record, settings, Path(out))
        elif name == "sd15-batch1":
            sd15_part(record, settings, 1)
        elif name == "sd15-batch4":
            sd15_part(record, settings, 4)
        else:
            step_part(record, settings)
    except Exception as exc:
        record.finish("failed", _failure(exc))
        raise
    return record.data


# --- the driver: every part in its own process under its cap -----------------------------------------


@dataclass
class PartOutcome:
    """How a part's process ended.

    Attributes:
        name: the part.
        returncode: its exit status (``None`` when killed at its cap).
        seconds: its wall time.
        timed_out: killed at its cap.
    """

    name: str
    returncode: int | None
    seconds: float
    timed_out: bool = False
    output_tail: list[str] = field(default_factory=list)


def run_process(name: str, cmd: Sequence[str], cap_s: float, log: Path, echo: Callable[[str], object] = print) -> PartOutcome:
    """Run part ``name``'s ``cmd`` in a new process group, its output appended to ``log`` and echoed; kill the group at ``cap_s``."""
    start = time.monotonic()
    tail: list[str] = []
    with open(log, "a") as sink:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                sink.flush()
                echo(line.rstrip("\n"))
                tail.append(line.rstrip("\n"))
                del tail[:-40]

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        code: int | None = None
        timed_out = False
        try:
            code = proc.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # at the cap, and when the driver itself is stopped (SIGTERM, Ctrl-C): the part's whole group goes
            if proc.poll() is None:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=5)
    return PartOutcome(name, code, time.monotonic() - start, timed_out, tail)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)  # type: ignore[arg-type]


def close_part(out: Path, part: Part, outcome: PartOutcome, cap_s: float | None = None) -> dict[str, Any]:
    """The part's record after its process ended (under ``cap_s``, default its own): marked timed out / failed where it did not finish."""
    cap_s = part.cap_s if cap_s is None else cap_s
    data = read_part(out, part.name) or {"part": part.name, "title": part.title, "status": "not started", "reason": None,
                                         "cap_s": part.cap_s, "estimate_s": part.estimate_s, "rows": [], "extra": {}}
    if outcome.timed_out:
        data["status"] = "timed out"
        data["reason"] = f"killed at its cap of {cap_s:g} s; the rows finished before are kept"
    elif data.get("status") in ("running", "not started") or outcome.returncode not in (0, None):
        if data.get("status") not in ("failed", "skipped"):
            data["status"] = "failed"
            data["reason"] = data.get("reason") or f"process exited with {outcome.returncode}: " + " / ".join(outcome.output_tail[-3:])[-300:]
    data["wall_s"], data["cap_s"] = round(outcome.seconds, 2), cap_s
    write_atomic(part_path(out, part.name), json.dumps(data, indent=1))
    return data


# --- the targets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One target of issue 25 and its verdict.

    Attributes:
        name: short name.
        claim: what it asks.
        verdict: ``"met"``, ``"not met"`` or ``"not measured"``.
        evidence: the numbers (or why there are none).
    """

    name: str
    claim: str
    verdict: str
    evidence: str


def _rows(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [r for r in (data or {}).get("rows", []) if not r.get("failure") and not r.get("skipped") and r.get("seconds")]


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def evaluate_targets(parts: dict[str, dict[str, Any] | None]) -> list[Target]:
    """The four targets from the parts' records (missing numbers give ``"not measured"``)."""
    out: list[Target] = []
    b1 = parts.get("sd15-batch1")
    rows1 = _rows(b1)
    device = (b1 or {}).get("device", "?")
    pi = _find(rows1, mode="compiled", method="paper-inpainting")
    if pi is None:
        out.append(Target("speed", "paper-inpainting compiled <= 2.5 s per 512x512 image at batch 1 on an H100", "not measured",
                          "no compiled paper-inpainting row" + _why(b1, mode="compiled", method="paper-inpainting")))
    else:
        ok = pi["median_s"] <= 2.5
        out.append(Target("speed", "paper-inpainting compiled <= 2.5 s per 512x512 image at batch 1 on an H100",
                          "met" if ok else "not met", f"median {pi['median_s']:.3f} s (min {pi['min_s']:.3f} s, "
                          f"{pi['nfe']} NFE) on {device}; the paper: ~15 s"))
    forward = ((b1 or {}).get("extra") or {}).get("forward_s", {})
    checks, verdicts = [], []
    for mode in ("eager", "compiled"):
        row = _find(rows1, mode=mode, method="paper-inpainting")
        if row is None or mode not in forward:
            continue
        bound = 1.1 * row["nfe"] * forward[mode]
        verdicts.append(row["median_s"] <= bound)
        checks.append(f"{mode}: {row['median_s']:.3f} s vs 1.1 x {row['nfe']} x {forward[mode] * 1e3:.2f} ms = {bound:.3f} s "
                      f"(ratio {row['median_s'] / (row['nfe'] * forward[mode]):.3f})")
    out.append(Target("overhead", "inexact Newton's seconds <= 1.1 x NFE x the plain forward time of the same run",
                      ("met" if all(verdicts) else "not met") if verdicts else "not measured",
                      "; ".join(checks) if checks else "no paper-inpainting row with a measured forward time"))
    step = _rows(parts.get("step-memory"))
    checks, verdicts = [], []
    for arch in ("sd15", "sd3"):
        plain, newton, gd = (_find(step, arch=arch, name=n) for n in ("plain", "inexact-newton", "gradient-descent"))
        if plain is None or newton is None or gd is None:
            checks.append(f"{arch}: not measured")
            continue
        speed = gd["per_inner_step_s"] / newton["per_inner_step_s"] if newton["per_inner_step_s"] > 0 else float("inf")
        memory = newton["peak_mb"] / plain["peak_mb"] if plain["peak_mb"] > 0 else float("inf")
        verdicts += [speed >= 1.5, memory <= 1.10]
        checks.append(f"{arch}: per inner step {newton['per_inner_step_s'] * 1e3:.1f} ms (inexact Newton) vs "
                      f"{gd['per_inner_step_s'] * 1e3:.1f} ms (gradient descent) = {speed:.2f}x; peak {newton['peak_mb']:.0f} MB vs "
                      f"plain {plain['peak_mb']:.0f} MB = {memory:.2f}x")
    complete = len(verdicts) == 4
    out.append(Target("inexact Newton vs gradient descent", ">= 1.5x faster per inner step than gradient descent and peak memory "
                      "<= 1.10 x plain inference, on SD 1.5 and on full-depth SD3",
                      ("met" if all(verdicts) else "not met") if complete else ("not met" if not all(verdicts) else "not measured"),
                      "; ".join(checks)))
    tests = parts.get("cuda-tests") or {}
    sync = [r for r in tests.get("rows", []) if "synchronisation" in r.get("test", "")]
    if tests.get("status") in (None, "skipped", "not started") or not sync:
        out.append(Target("no host sync", "no host synchronisation inside the inner loop on CUDA (the sync-debug test passes)",
                          "not measured", tests.get("reason") or "the CUDA tests did not run"))
    else:
        bad = [r for r in sync if r["outcome"] not in ("passed", "skipped")]
        passed = sum(r["outcome"] == "passed" for r in sync)
        out.append(Target("no host sync", "no host synchronisation inside the inner loop on CUDA (the sync-debug test passes)",
                          "met" if not bad else "not met",
                          f"{passed} of {len(sync)} sync-debug cases passed"
                          + (f"; failed: {', '.join(r['test'].split('::')[-1] for r in bad)}" if bad else "")))
    return out


def _why(data: dict[str, Any] | None, **match: Any) -> str:
    if data is None:
        return " (the part did not run)"
    row = _find(data.get("rows", []), **match)
    if row is None:
        return f" (part {data.get('status')}{': ' + data['reason'] if data.get('reason') else ''})"
    return f" ({row.get('failure') or row.get('skipped')})"
