"""``constrained-diffusion tune``: resume, two processes on one study, failed trials, the best config, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

optuna = pytest.importorskip("optuna")

import constrained_diffusion as cd  # noqa: E402
from constrained_diffusion.cli.main import main  # noqa: E402
from constrained_diffusion.tuning import Float, SearchSpace  # noqa: E402
from constrained_diffusion.tuning.tuner import Tuner, open_storage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(model="mnist-ddpm", data="mnist-validation", task="box", limit=2, steps=2, batch_size=2, quiet=True)


def _study(db: Path, name: str | None = None):
    storage = f"sqlite:///{db}"
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return optuna.load_study(study_name=name or names[0], storage=storage)


def _argv(db: Path, *extra: str, trials: int = 3) -> list[str]:
    return ["tune", "--model", "mnist-ddpm", "--data", "mnist-validation", "--task", "box", "--method", "inexact-newton",
            "--trials", str(trials), "--limit", "2", "--steps", "2", "--batch-size", "2", "--storage", f"sqlite:///{db}",
            "--quiet", *extra]


def test_a_3_trial_study_resumes_to_6_with_the_same_trials_as_one_run(tmp_path):
    assert main(_argv(tmp_path / "a.db", trials=3)) == 0
    assert len(_study(tmp_path / "a.db").trials) == 3
    assert main(_argv(tmp_path / "a.db", trials=3)) == 0  # --trials is what this run adds
    resumed = _study(tmp_path / "a.db").trials
    assert [t.number for t in resumed] == list(range(6)) and all(t.state.name in ("COMPLETE", "PRUNED") for t in resumed)
    assert main(_argv(tmp_path / "b.db", trials=6)) == 0
    once = _study(tmp_path / "b.db").trials
    # each trial's draws are seeded by (seed, trial number): resuming changes nothing
    assert [t.params for t in once] == [t.params for t in resumed]
    complete = [t for t in resumed if t.state.name == "COMPLETE"]
    assert all({"nfe", "seconds_per_image", "sem", "images"} <= set(t.user_attrs) for t in complete)
    # the paper's loop: per step 1 forward, then 2 per inner step minus the reused one (K + 1 forwards + K)
    assert all(t.user_attrs["nfe"] == 2 * (1 + 2 * t.params["inner_steps"]) for t in complete), [t.user_attrs for t in complete]


def test_two_processes_share_one_sqlite_study(tmp_path):
    db = tmp_path / "shared.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "constrained_diffusion", *_argv(db, trials=2)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    trials = _study(db).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # one study, four trials, none lost or doubled
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # no two processes drew the same setting


def test_the_best_trial_is_a_config_that_evaluate_runs(tmp_path, capsys):
    cfg = tmp_path / "best.yaml"
    assert main(_argv(tmp_path / "c.db", "--out-config", str(cfg), "--figures", str(tmp_path / "fig"), trials=3)) == 0
    doc = yaml.safe_load(cfg.read_text())
    study = _study(tmp_path / "c.db")
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert doc["data"] == "mnist-test" and doc["steps"] == 2  # tuned on validation, scored on the other half
    (method,) = doc["method"]
    assert method["set"]["solver.h"] == best.params["solver.h"] and method["set"]["step_scale"] == [best.params["step_scale.0"], best.params["step_scale.1"]]
    assert (tmp_path / "fig" / "history.png").stat().st_size > 1000 and (tmp_path / "fig" / "importance.png").stat().st_size > 1000
    out = tmp_path / "scored"
    assert main(["evaluate", "--config", str(cfg), "--limit", "2", "--batch-size", "2", "--out", str(out), "--quiet"]) == 0
    records = [yaml.safe_load(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {r["method"] for r in records} == {"inexact-newton (tuned)"}
    test_ids = set(cd.data.images.open_images("mnist-test", (1, 32, 32)).ids)
    assert {r["image"] for r in records} <= test_ids


class _Flaky(cd.Solver):
    """A solver that returns NaN when its option ``bad`` exceeds 0.5 (a failing region of a search space)."""

    name = "flaky-test-solver"
    direction_kind = "jvp"

    class Config(cd.solvers.SolverConfig):
        bad: float = 0.0

    search_space = SearchSpace({"bad": Float(0.0, 1.0)})

    def direction(self, denoiser, x_t, t, e, x0):
        return torch.full_like(x_t, float("nan")) if self.bad > 0.5 else e


@pytest.fixture
def flaky():
    """`_Flaky` registered for one test (the registry is global: the docs' list of spaces must not see it)."""
    from constrained_diffusion.solvers import registry

    cd.solvers.register(_Flaky)
    yield _Flaky
    registry._REGISTRY.pop(_Flaky.name, None)


def test_failed_trials_are_recorded_not_raised(tmp_path, flaky):
    db = tmp_path / "f.db"
    # a constant step: the dynamic rule's safe ratio would turn a NaN direction into a zero step
    summary = Tuner(**SMALL, method="flaky-test-solver", trials=8, storage=f"sqlite:///{db}",
                    set={"inner_steps": 1, "step_rule": "constant"}).run()
    trials = _study(db).trials
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(trials) == 8 and summary["fail"] == len(failed) >= 1
    # the engine stops a sample that turns non-finite (FloatingPointError); the trial says so
    assert all(t.params["solver.bad"] > 0.5 and "non-finite" in t.user_attrs["error"] for t in failed)
    assert all(t.params["solver.bad"] <= 0.5 for t in trials if t.state.name == "COMPLETE")


def test_a_dead_process_trial_is_failed_and_its_setting_queued_again(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat=1, grace=1)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)  # a process started the trial, then died (kill -9): no more heartbeats
    time.sleep(2.5)
    optuna.storages.fail_stale_trials(study)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states == ["FAIL", "WAITING"]
    waiting = study.get_trials()[1]
    assert waiting.params == {"x": trial.params["x"]} and waiting.system_attrs["failed_trial"] == 0  # the same setting runs again


@pytest.mark.parametrize("change, needle", [
    (["--method", "nowhere"], "--method: unknown method 'nowhere'"),
    (["--metric", "fid"], "--metric: fid is a set-level metric"),
    (["--metric", "accuracy"], "--metric: unknown metric 'accuracy'"),
    (["--trials", "0"], "--trials: expected an integer >= 1"),
    (["--method", "gradient-descent", "--set", "step_scale=0.1", "inner_steps=2"], "empty search space"),
    (["--method", "dps", "--set", "inner_steps=3"], "inner_steps must be 0 or 1"),
    (["--storage", "nosuchdialect://x"], "--storage: cannot open nosuchdialect://x"),
    (["--task", "paint"], "--task: unknown task 'paint'"),
])
def test_bad_input_is_one_line_before_any_sampling(tmp_path, capsys, change, needle):
    argv = _argv(tmp_path / "bad.db")
    for flag in change[::2]:
        if flag.startswith("--") and flag in argv and flag != "--set":
            i = argv.index(flag)
            del argv[i:i + 2]
    with pytest.raises(SystemExit) if change[0] == "--trials" else _nothing():
        code = main([*argv, *change])
        assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err
    if change[0] != "--storage":
        assert not (tmp_path / "bad.db").exists() or not _study(tmp_path / "bad.db").trials


def test_a_study_made_with_other_settings_is_refused(tmp_path, capsys):
    db = tmp_path / "d.db"
    assert main(_argv(db, "--study", "mine", trials=1)) == 0
    argv = _argv(db, "--study", "mine", trials=1)
    argv[argv.index("--limit") + 1] = "3"
    assert main(argv) == 2
    assert "was made with other settings (differs in: limit)" in capsys.readouterr().err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_tune_study_tunes_every_method_equally_then_scores_on_test_digits(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# x\n\n<!-- TUNING-TABLE:START -->\nold\n<!-- TUNING-TABLE:END -->\n")
    argv = ["tune-study", "--models", "mnist-ddpm", "--tasks", "box", "--methods", "inexact-newton", "gradient-descent",
            "--trials", "2", "--limit", "2", "--batch-size", "2", "--steps", "2", "--test-limit", "2",
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "out"), "--device", "cpu", "--write-docs", str(page)]
    assert main(argv) == 0
    import json

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (pair,) = results["pairs"]
    for name in ("inexact-newton", "gradient-descent"):
        r = pair["methods"][name]
        assert r["trials"] == 2 and r["equal_steps"]["n"] == 2 and r["equal_steps"]["steps"] == 2
    assert pair["methods"]["inexact-newton"]["equal_steps"]["diff"] == 0.0  # the reference against itself
    assert "| gradient-descent" in page.read_text() and "old" not in page.read_text()
    assert (tmp_path / "out" / "figures" / "mnist-ddpm-box-history.png").stat().st_size > 1000
    assert (tmp_path / "out" / "figures" / "mnist-ddpm-box-importance.png").stat().st_size > 1000
    # a rerun tunes nothing more and samples nothing more: every study is full and every record is there
    before = (tmp_path / "out" / "score" / "mnist-ddpm-box" / "equal-steps" / "records.jsonl").read_text()
    assert main(argv) == 0
    assert (tmp_path / "out" / "score" / "mnist-ddpm-box" / "equal-steps" / "records.jsonl").read_text() == before
    assert len(_study(tmp_path / "s.db", "mnist-ddpm/mnist-validation:stratified-2/box/inexact-newton/psnr/steps=2/images=2").trials) == 2


# -- issue 24: a fair study -------------------------------------------------------------------------
def test_a_stratified_subset_of_10_holds_one_digit_of_each_class_and_keeps_its_ids():
    from constrained_diffusion.data.images import open_images
    from constrained_diffusion.tuning.study import TuningStudy

    labels = cd.data.mnist("held-out")[1]
    for name in ("mnist-validation", "mnist-test"):
        subset = open_images(f"{name}:stratified-10", (1, 32, 32))
        assert sorted(int(labels[int(i)]) for i in subset.ids) == list(range(10))
        assert set(subset.ids) <= set(open_images(name, (1, 32, 32)).ids)  # the same ids (held-out positions) as the full set
        twenty = [int(labels[int(i)]) for i in open_images(f"{name}:stratified-20", (1, 32, 32)).ids]
        assert all(twenty.count(c) == 2 for c in range(10))
    # the first 10 by id, what the old study tuned on, are all zeros
    assert {int(labels[int(i)]) for i in open_images("mnist-validation", (1, 32, 32)).ids[:10]} == {0}
    study = TuningStudy(models=["mnist-ddpm"], tasks=["box"], methods=["inexact-newton"], limit=6, test_limit=20)
    assert (study.tuning_data, study.scoring_data) == ("mnist-validation:stratified-6", "mnist-test:stratified-20")
    assert TuningStudy(limit=6, stratify=False).tuning_data == "mnist-validation"
    with pytest.raises(ValueError, match="stratified-0"):
        open_images("mnist-test:stratified-0", (1, 32, 32))


def test_a_study_with_failing_trials_still_reaches_n_complete_trials(tmp_path, flaky):
    from constrained_diffusion.tuning.tuner import count_trials

    db = f"sqlite:///{tmp_path / 'n.db'}"
    tuner = Tuner(**SMALL, method="flaky-test-solver", trials=1, storage=db, set={"inner_steps": 1, "step_rule": "constant"})
    tuner.run(complete=4, max_finished=40)
    done = count_trials(tuner.open())
    assert done["complete"] == 4 and done["fail"] >= 1 and done["finished"] == done["complete"] + done["fail"] + done["pruned"]
    tuner.run(complete=4, max_finished=40)  # a rerun adds nothing
    assert count_trials(tuner.open()) == done
    # a method whose every setting fails stops at the finished-trial cap instead of running forever
    always = Tuner(**SMALL, method="flaky-test-solver", trials=1, storage=db, study="always-fails",
                   set={"inner_steps": 1, "step_rule": "constant", "solver.bad": 0.9})
    always.run(complete=2, max_finished=3)
    stuck = count_trials(always.open())
    assert (stuck["complete"], stuck["fail"], stuck["finished"]) == (0, 3, 3)


def _pair(psnr: dict[str, list[float]], reference: str = "a") -> dict:
    methods = {}
    for m, values in psnr.items():
        per = {f"{i:05d}": v for i, v in enumerate(values)}
        stats = {"steps": 4, "nfe": 10.0, "nbe": 0.0, "evals": 10.0, "seconds": 0.1, "peak_mb": 8.0, "peak_mb_per_image": 2.0,
                 "per_image": per, "ssim": 0.5, "ssim_ci": 0.1}
        from constrained_diffusion.tuning.study import mean_ci

        stats["psnr"], stats["psnr_ci"] = mean_ci(values)
        diffs = [v - r for v, r in zip(values, psnr[reference])]
        stats["diff"], stats["diff_ci"] = mean_ci(diffs) if m != reference else (0.0, 0.0)
        methods[m] = {"overrides": {}, "validation": 20.0, "trials": 5, "complete": 3, "pruned": 2, "failed": 0,
                      "equal_steps": stats, "equal_evals": stats, "equal_time": stats}
    return {"model": "mnist-ddpm", "task": "box", "methods": methods, "skipped": {"repaint": "TypeError: no mask"}}


def test_the_verdict_is_computed_from_the_table():
    from constrained_diffusion.tuning.report import against, leaders, table, verdict

    pair = _pair({"a": [20.0, 21.0, 22.0, 23.0], "b": [25.0, 26.0, 27.5, 28.0], "c": [24.9, 26.2, 27.0, 28.1], "d": [10.0, 11.0, 9.0, 10.5]})
    results = {"config": {"reference": "a", "trials": 3, "models": ["mnist-ddpm"], "tasks": ["box"], "methods": ["a", "b", "c", "d"],
                          "limit": 6, "test_limit": 4, "data": "mnist-validation", "test_data": "mnist-test", "steps": 4}, "pairs": [pair]}
    budget = {m: r["equal_evals"] for m, r in pair["methods"].items()}
    assert leaders(budget) == ("b", ["c"])  # c's paired difference to b reaches 0; a's and d's do not
    assert against(budget, "a") == {"above": ["b", "c"], "below": ["d"], "tied": []}
    text = verdict(results)
    assert "| mnist-ddpm | box  | **b** (tied: c)" in text
    assert "ahead b, c; behind d; not distinguishable none" in text
    assert "3 complete trials each" in text and "Left out: repaint (TypeError: no mask)" in text
    assert "| b " in table(results) and "3/2/0" in table(results)


def test_tune_study_writes_the_choosing_page(tmp_path):
    import json

    page = tmp_path / "docs" / "choosing.md"
    page.parent.mkdir()
    page.write_text("# Choosing\n\nhand-written\n\n<!-- CHOOSING:START -->\nold\n<!-- CHOOSING:END -->\n")
    argv = ["tune-study", "--models", "mnist-ddpm", "--tasks", "sr4", "--methods", "inexact-newton", "ddrm", "repaint",
            "--trials", "1", "--limit", "2", "--batch-size", "2", "--steps", "2", "--test-limit", "2", "--test-batch-size", "2",
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--out", str(tmp_path / "out"), "--device", "cpu", "--write-choosing", str(page)]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (pair,) = results["pairs"]
    assert set(pair["methods"]) == {"inexact-newton", "ddrm"} and "Inpainting" in pair["skipped"]["repaint"]
    ddrm, ref = pair["methods"]["ddrm"], pair["methods"]["inexact-newton"]
    assert ddrm["complete"] == 1 and ddrm["equal_steps"]["steps"] == 2
    # equal NFE + NBE: DDRM (1 evaluation a step) gets the steps that make its evaluations the reference's
    assert ddrm["equal_evals"]["evals"] == ref["equal_steps"]["evals"] and ddrm["equal_evals"]["steps"] == ref["equal_steps"]["evals"]
    assert sorted(ddrm["equal_evals"]["per_image"]) == sorted(ref["equal_steps"]["per_image"])  # the same two test digits
    text = page.read_text()
    assert "hand-written" in text and "old" not in text and "**small run**" in text
    assert "--write-choosing" in text and "![Pareto figure](figures/choosing/pareto.png)" in text
    assert "Left out: repaint" in text and "mnist-test:stratified-2" in text
    assert (page.parent / "figures" / "choosing" / "pareto.png").stat().st_size > 5000
    # --phase report: the page again from results.json, no study opened, nothing sampled
    records = (tmp_path / "out" / "score" / "mnist-ddpm-sr4" / "equal-evals" / "records.jsonl").read_text()
    page.write_text("# Choosing\n\n<!-- CHOOSING:START -->\nold\n<!-- CHOOSING:END -->\n")
    (tmp_path / "s.db").unlink()
    assert main([*argv, "--phase", "report"]) == 0
    assert page.read_text().count("Left out: repaint") == 1 and "old" not in page.read_text()
    assert (tmp_path / "out" / "score" / "mnist-ddpm-sr4" / "equal-evals" / "records.jsonl").read_text() == records
    assert not (tmp_path / "s.db").exists()
