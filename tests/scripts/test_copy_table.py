"""scripts/copy_table.py: trains the Copy configs, writes the table and the plots, and reuses finished runs."""

from __future__ import annotations

import fcntl
import json
import subprocess
from types import SimpleNamespace

import pytest
from helpers import ROOT, load_script, run_python
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow


def test_table_script_trains_the_configs_writes_table_and_plots_and_reuses_runs(tmp_path):
    args = ["scripts/copy_table.py", "--steps", "60", "--tasks", "repeat-copy", "--unrolls", "3", "--variants",
            "bptt", "dni", "--out", str(tmp_path / "grid"), "--extra", "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1", "--model.init_args.hidden_size=16"]  # the shipped configs, a tiny core
    res = run_python(args, ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = tmp_path / "grid"
    table = (out / "table.md").read_text()
    assert "| repeat-copy | 3 |" in table and "| 5 / 33 |" in table  # ours beside the paper's BPTT / DNI
    summary = json.loads((out / "results.json").read_text())
    assert [(r["variant"], r["steps"], r["returncode"]) for r in summary["runs"]] == [("bptt", 60, 0), ("dni", 60, 0)]
    for r in summary["runs"]:
        assert set(r["history"]) == {"step", "level", "bits_error", "solved"}  # the history as columns
        assert r["history"]["step"] and r["history"]["step"][-1] <= 60 and r["solved"] >= 0
    run_dir = out / "repeat-copy/dni3/seed1"
    assert (run_dir / "curriculum.json").is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"curriculum/level", "curriculum/solved", "val/bits_error", "sg/loss"} <= set(events.Tags()["scalars"])
    # one x axis, the optimiser step: the curriculum where validation and the history put it (3 steps a batch)
    levels = [e.step for e in events.Scalars("curriculum/level")]
    assert levels == [e.step for e in events.Scalars("val/bits_error")] == summary["runs"][1]["history"]["step"]
    assert (out / "repeat-copy.png").stat().st_size > 0 and len(list((out / "plots").glob("*.png"))) == 2
    again = run_python(args, ROOT)
    assert again.returncode == 0 and all(r["reused"] for r in json.loads((out / "results.json").read_text())["runs"])
    # --report trains nothing: it tabulates the finished runs and names the others
    report = run_python([*args[:10], "dni-aux", "--report", *args[10:]], ROOT)
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-3000:]
    assert "not finished: repeat-copy dni3-aux seed 1" in report.stderr and not (out / "repeat-copy/dni3-aux").exists()
    reported = json.loads((out / "results.json").read_text())
    assert reported["finished"] == "2 of 3 runs" and [r["variant"] for r in reported["runs"]] == ["bptt", "dni"]
    # a larger budget continues each run from its checkpoint: the curve so far is kept, not retrained
    longer = run_python([*args[:2], "90", *args[3:]], ROOT)
    assert longer.returncode == 0, longer.stdout[-2000:] + longer.stderr[-3000:]
    runs = json.loads((out / "results.json").read_text())["runs"]
    for before, after in zip(summary["runs"], runs):
        assert after["steps"] == 90 and after["continued_from"] == [60] and "--ckpt_path=" in after["command"]
        assert all(after["history"][k][:len(v)] == v for k, v in before["history"].items())
        assert before["history"]["step"][-1] < after["history"]["step"][-1] <= 90
    # a run stopped before it finished resumes from its checkpoint instead of starting over: here a 120-step
    # run killed after its checkpoint at step 90, which leaves started.json and latest.ckpt but no done.json
    started = json.loads((run_dir / "started.json").read_text())
    (run_dir / "started.json").write_text(json.dumps({**started, "key": {**started["key"], "steps": 120}}))
    (run_dir / "done.json").unlink()
    resumed = run_python([*args[:2], "120", *args[3:]], ROOT)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    dni = json.loads((out / "results.json").read_text())["runs"][1]
    assert dni["interruptions"] == 1 and dni["continued_from"] == [60] and "--ckpt_path=" in dni["command"]
    assert all(dni["history"][k][: len(v)] == v for k, v in runs[1]["history"].items())
    assert dni["history"]["step"][-1] > 90
    assert dni["seconds"] > runs[1]["seconds"]


def test_dynamics_and_ceiling_scripts_read_a_copy_grid(tmp_path):
    """scripts/copy_dynamics.py summarises every run's logged metrics; scripts/copy_sg_ceiling.py
    scores M, the best linear map and an MLP fit against the true future gradient on a DNI checkpoint."""
    out = tmp_path / "grid"
    res = run_python(["scripts/copy_table.py", "--steps", "40", "--tasks", "copy", "--unrolls", "2", "--variants",
                      "bptt", "dni", "--out", str(out), "--extra", "--trainer.val_check_interval=2",
                      "--trainer.log_every_n_steps=1", "--model.init_args.probe_every=10",
                      "--model.init_args.hidden_size=16"], ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    res = run_python(["scripts/copy_dynamics.py", str(out), "--out", str(tmp_path / "dyn")], ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads((tmp_path / "dyn" / "dynamics.json").read_text())
    assert [(r["variant"], r["seed"]) for r in rows] == [("bptt", 1), ("dni", 1)]
    assert "sg/probe_cosine" in rows[1]["metrics"] and "sg/pred_norm" not in rows[0]["metrics"]
    assert rows[0]["metrics"]["state/c_norm"]["last"] > 0
    ckpt = out / "copy/dni2/seed1/checkpoints/latest.ckpt"
    res = run_python(["scripts/copy_sg_ceiling.py", "--ckpt", str(ckpt), "--rows", "8", "--boundaries", "20",
                      "--unrolls", "4", "--mlp", "8", "--ranks", "2", "--out", str(tmp_path / "ceiling.json")], ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    ceiling = json.loads((tmp_path / "ceiling.json").read_text())
    assert ceiling["boundaries"] == 8 * 20 and ceiling["held_out"] == 32
    fits = {"ridge(s)", "ridge(tanh s)", "ridge(s, last input)", "ridge(s, last input, s x last input)",
            "mlp8(tanh s)", "rank2(tanh s)", "diagonal(tanh s)", "ridge(tanh s, episode vectors)",
            "ridge(tanh s, episode vectors x place)", "mlp8(tanh s, episode vectors)"}
    for key in ("true", "discounted", "episode"):
        assert set(ceiling["results"][key]) == {"M", "mean", "target_norm"} | fits
        assert all(-1 <= ceiling["results"][key][fit]["cosine"] <= 1 for fit in fits)
    # the shipped Copy resets the state at each episode start: the losses of later episodes do not
    # depend on the boundary state, so the current episode's gradient is the whole future gradient
    episode, true = ceiling["results"]["episode"]["target_norm"], ceiling["results"]["true"]["target_norm"]
    assert episode == pytest.approx(true, rel=1e-6) and true > 0


def test_a_variant_without_a_shipped_config_is_refused_before_any_run(tmp_path):
    res = run_python(["scripts/copy_table.py", "--steps", "10", "--tasks", "copy", "--unrolls", "3", "4",
                      "--variants", "dni-n4", "--out", str(tmp_path / "grid")], ROOT)
    assert res.returncode == 2 and "no shipped config for configs/copy/dni4-n4.yaml:" in res.stderr
    assert "dni3-n4" not in res.stderr and not (tmp_path / "grid" / "copy").exists()


def test_the_upper_bound_runs_on_whole_episode_windows_and_each_upper_variant_gets_its_row():
    table_script = load_script("copy_table")
    assert table_script.config_name("bptt-whole", table_script.UPPER) == "bptt120-whole"
    run = {"task": "copy", "unroll": 60, "steps": 10, "returncode": 0}
    results = [{**run, "variant": "bptt-whole", "seed": 1, "solved": 16},
               {**run, "variant": "bptt-whole", "seed": 2, "solved": 18},
               {**run, "variant": "bptt", "seed": 1, "solved": 15},
               {**run, "unroll": 120, "variant": "bptt-whole", "seed": 1, "solved": 19}]
    rows = table_script.table(results, ["copy"], [2], ["bptt", "dni"]).splitlines()
    assert "| copy | 60 (BPTT over the whole window of whole episodes: the upper bound) | **17** [35] (16 / 18) | | |" in rows
    assert "| copy | 60 (BPTT over the whole window, episodes cut by windows) | **15** [31] (15) | | |" in rows
    assert "| copy | 120 (BPTT over the whole window of whole episodes: the upper bound) | **19** [39] (19) | | |" in rows


def test_the_upper_window_picks_the_upper_bounds_config(tmp_path):
    """The upper bound runs bptt120-whole.yaml (a 120-step window and unroll), with --upper-window 60 120 also
    bptt60-whole.yaml; a window without a shipped config for the chosen variant is refused before any run."""
    res = run_python(["scripts/copy_table.py", "--steps", "10", "--tasks", "copy", "--unrolls", "2", "--upper",
                      "--report", "--out", str(tmp_path / "grid")], ROOT)
    assert res.returncode == 0 and "not finished: copy bptt120-whole seed 1" in res.stderr
    assert "bptt60-whole" not in res.stderr
    res = run_python(["scripts/copy_table.py", "--steps", "10", "--tasks", "copy", "--unrolls", "2", "--upper",
                      "--upper-window", "60", "120", "--report", "--out", str(tmp_path / "grid")], ROOT)
    assert res.returncode == 0 and "not finished: copy bptt60-whole seed 1" in res.stderr
    assert "not finished: copy bptt120-whole seed 1" in res.stderr
    res = run_python(["scripts/copy_table.py", "--steps", "10", "--tasks", "copy", "--unrolls", "2", "--upper",
                      "--upper-window", "120", "--upper-variant", "bptt", "--out", str(tmp_path / "grid")], ROOT)
    assert res.returncode == 2 and "no shipped config for configs/copy/bptt120.yaml" in res.stderr


def test_a_run_another_process_is_training_is_left_to_it(tmp_path):
    """Two grid commands over the same runs: the run whose lock another process holds is neither trained
    nor resumed a second time, reported as left to that process, and no failure."""
    log_dir = tmp_path / "grid" / "copy" / "bptt3" / "seed1"
    log_dir.mkdir(parents=True)
    with open(log_dir / "running.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = run_python(["scripts/copy_table.py", "--steps", "10", "--tasks", "copy", "--unrolls", "3",
                          "--variants", "bptt", "--out", str(tmp_path / "grid")], ROOT)
    assert res.returncode == 0, res.stderr
    assert "copy         bptt3     seed 1: being trained by another process, left to it" in res.stdout
    assert not (log_dir / "stdout.txt").exists() and not (log_dir / "started.json").exists()
    summary = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert summary["finished"] == "0 of 1 runs" and summary["runs"][0]["returncode"] is None


def test_records_of_a_committed_grid_count_as_finished_runs(tmp_path):
    """--records: a results.json's runs with the grid's settings and budget are finished runs in a fresh --out
    (reported, not retrained, history kept); a run of another budget is not; a file that is not one is refused."""
    history = {"step": [300, 600], "level": [1, 2], "bits_error": [0.0, 0.1], "solved": [1, 2]}
    run = {"task": "copy", "variant": "bptt", "unroll": 3, "steps": 10, "extra": [], "method": "bptt",
           "returncode": 0, "seconds": 5.0, "history": history, "command": "-m seqdni.train ...", "reused": True}
    records = tmp_path / "records.json"
    records.write_text(json.dumps({"runs": [{**run, "seed": 1, "solved": 2}, {**run, "seed": 2, "steps": 20, "solved": 9}]}))
    args = ["scripts/copy_table.py", "--steps", "10", "--seeds", "2", "--tasks", "copy", "--unrolls", "3",
            "--variants", "bptt", "--report", "--out", str(tmp_path / "grid"), "--records", str(records)]
    res = run_python(args, ROOT)
    assert res.returncode == 0, res.stderr
    assert "1 finished runs taken from" in res.stdout and "not finished: copy bptt3 seed 2" in res.stderr
    summary = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert summary["finished"] == "1 of 2 runs"
    assert summary["runs"][0]["history"] == history and summary["runs"][0]["solved"] == 2
    assert "| copy | 3 | **2** [5] (2) |" in (tmp_path / "grid" / "table.md").read_text()
    records.write_text("not json")
    bad = run_python(args, ROOT)
    assert bad.returncode == 2 and "is not a results.json written by this script" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_finished_run_that_solved_no_level_is_told_apart_from_a_run_not_finished(tmp_path, monkeypatch, capsys):
    """A run that ends its budget before any validation writes no curriculum (its record: solved null); it
    finished and solved no level, so it prints and tabulates as N = 0, not as the – of a run without a result."""
    table_script = load_script("copy_table")
    codes = iter([0, 1])  # the training process: finished, then failed; neither validated

    def run(cmd, **kwargs):
        return SimpleNamespace(returncode=next(codes))

    monkeypatch.setattr(table_script, "subprocess", SimpleNamespace(run=run, STDOUT=subprocess.STDOUT))
    out = tmp_path / "grid"
    runs = [table_script.train(table_script.run_key("copy", v, 3, 1, 10, []), f"{v}3",
                               table_script.run_dir(out, "copy", v, 3, 1), out) for v in ("bptt", "dni")]
    printed = capsys.readouterr().out
    assert [(r["returncode"], r["solved"]) for r in runs] == [(0, None), (1, None)]
    assert "copy         bptt3     seed 1: N = 0 (none solved) (" in printed
    assert "copy         dni3      seed 1: N = – (" in printed and "None" not in printed
    row = next(ln for ln in table_script.table(runs, ["copy"], [3], ["bptt", "dni", "dni-aux"]).splitlines()
               if ln.startswith("| copy | 3 |"))
    assert row.startswith("| copy | 3 | **0** [1] (0) | – | – |")  # dni failed, dni-aux never ran
    # the same for a run that validated without solving a level (its curriculum says 0) and one that solved 4
    validated = [{**runs[0], "seed": 2, "solved": 0}, {**runs[0], "seed": 3, "solved": 4}]
    assert table_script.shown(validated[0]) == "0 (none solved)" and table_script.shown(validated[1]) == "4"
    assert "| copy | 3 | **0** [1] (0 / 0 / 4) |" in table_script.table([runs[0], *validated], ["copy"], [3], ["bptt"])
