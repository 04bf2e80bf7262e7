"""scripts/ptb_table.py: one command runs a grid, writes the report, resumes finished and interrupted
runs; the report compares the configs at convergence, at equal characters and at equal CPU time."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml
from helpers import ROOT, load_script, run_python

from seqdni.cli.parser import SHIPPED

ptb_table = load_script("ptb_table")


def _configs(tmp_path):
    base = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    base["trainer"]["callbacks"] = base["trainer"]["callbacks"][:2] + [
        {"class_path": "seqdni.training.TrainingClock"},
        {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
         "init_args": {"monitor": "val/bpc", "mode": "min", "patience": 50}}]
    cfgs = tmp_path / "configs"
    cfgs.mkdir()
    for name, dni in (("bptt8", None), ("dni8", {"scale": 0.1})):
        cfg = yaml.safe_load(yaml.safe_dump(base))
        if dni:
            cfg["model"]["init_args"]["dni"] = dni
        (cfgs / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return cfgs


def _command(cfgs, out, text_files, tmp_path, *args):
    return [str(ROOT / "scripts/ptb_table.py"), "--configs", str(cfgs), "--out", str(out), *args, "--",
            f"--data.train_files=[{text_files['train']}]", f"--data.val_files=[{text_files['valid']}]",
            f"--data.test_files=[{text_files['test']}]", f"--data.cache_dir={tmp_path / 'cache'}",
            "--data.download=false"]


@pytest.mark.slow
def test_grid_writes_results_table_plots_and_resumes(text_files, tmp_path):
    cfgs, out = _configs(tmp_path), tmp_path / "grid"
    cmd = _command(cfgs, out, text_files, tmp_path, "--names", "bptt8", "dni8", "--budget-chars", "1024")
    first = run_python(cmd, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["name"] for r in runs] == ["bptt8", "dni8"]
    for r in runs:
        assert r["chars_seen"] == 1024  # 1024 chars / (batch 4 x unroll 4) = 64 steps = 16 batches of 64
        assert r["test_bpc"] is not None and r["best_val_bpc"] == min(p["bpc"] for p in r["val_curve"])
        cpu = [p["cpu_seconds"] for p in r["val_curve"]]
        assert cpu == sorted(cpu) and cpu[0] > 0 and r["train_cpu_seconds"] >= cpu[-1]  # at each validation, the end
        assert r["stopped_early"] is False  # patience 50: the budget ended it
        assert r["seconds"] > 0 and r["peak_memory_mib"] > 0 and r["chars_per_sec"] > 0
    assert runs[1]["sg_cosine_mean"] is not None and runs[0]["sg_cosine_mean"] is None
    table = (out / "table.md").read_text()
    assert f"| bptt8 | 1 | {runs[0]['test_bpc']:.4f} |" in table and "| 1.34 |" in table  # beside the paper's DNI-8
    assert "within the first 1,024 training characters" in table and "- dni8 − bptt8:" in table
    for png in ("val_bpc_vs_chars.png", "val_bpc_vs_cpu_seconds.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    again = run_python(cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 2 runs finished" in again.stdout and "seqdni.train" not in again.stdout  # nothing retrained
    assert json.loads((out / "results.json").read_text())["runs"] == runs

    # An interrupted run (a checkpoint, no result) continues from its checkpoint: here, to a larger budget.
    (out / "runs" / "bptt8-s0" / "result.json").unlink()
    longer = _command(cfgs, out, text_files, tmp_path, "--names", "bptt8", "--budget-chars", "2048")
    resumed = run_python(longer, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--ckpt_path=" in resumed.stdout and "--trainer.logger.init_args.purge_step=65" in resumed.stdout
    r = json.loads((out / "results.json").read_text())["runs"][0]
    assert r["chars_seen"] == 2048 and r["val_curve"][: len(runs[0]["val_curve"])] == runs[0]["val_curve"]
    assert r["train_cpu_seconds"] > runs[0]["train_cpu_seconds"]

    # Committed records stand in for runs that are not on disk.
    restored = run_python(_command(cfgs, tmp_path / "elsewhere", text_files, tmp_path, "--names", "bptt8",
                                   "--records", str(out / "results.json")), cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert "1 of 1 runs finished" in restored.stdout and "seqdni.train" not in restored.stdout
    report = run_python(_command(cfgs, tmp_path / "elsewhere", text_files, tmp_path, "--names", "bptt8", "dni8",
                                 "--records", str(out / "results.json"), "--report"), cwd=tmp_path)
    assert report.returncode == 0 and "seqdni.train" not in report.stdout  # dni8 is not trained, only missing
    assert "not finished yet: dni8 seed 0" in report.stdout
    assert [r["name"] for r in json.loads((tmp_path / "elsewhere" / "results.json").read_text())["runs"]] == ["bptt8"]

    # A run that ends without its test (a signal stopped it) is not finished: no result, the next command continues it.
    cut = run_python(_command(cfgs, tmp_path / "cut", text_files, tmp_path, "--names", "bptt8", "--budget-chars",
                              "256") + ["--trainer.limit_test_batches=0"], cwd=tmp_path)
    assert cut.returncode == 0, cut.stderr[-3000:]
    assert "bptt8 seed 0 did not finish" in cut.stdout and "not finished yet: bptt8 seed 0" in cut.stdout
    assert not (tmp_path / "cut" / "runs" / "bptt8-s0" / "result.json").exists()


def _run(name, seed, bpcs, per_val_chars=100, per_val_cpu=10.0, test=None):
    curve = [{"chars": per_val_chars * (k + 1), "cpu_seconds": per_val_cpu * (k + 1), "bpc": b}
             for k, b in enumerate(bpcs)]
    best = min(curve, key=lambda p: p["bpc"])
    return {"name": name, "seed": seed, "val_curve": curve, "chars_seen": curve[-1]["chars"],
            "train_cpu_seconds": curve[-1]["cpu_seconds"], "best_val_bpc": best["bpc"],
            "best_val_at_chars": best["chars"], "best_val_at_cpu_seconds": best["cpu_seconds"],
            "test_bpc": test if test is not None else best["bpc"] - 0.05, "stopped_early": True}


def test_report_answers_at_convergence_equal_characters_and_equal_cpu():
    # bptt8 validates every 100 chars / 10 CPU s and stops after 3 validations; dni8 is better at the end
    # and per character, but costs 2.5x the CPU time per character.
    results = [_run("bptt8", s, [2.0 + d, 1.8 + d, 1.7 + d]) for s, d in ((0, 0.0), (1, 0.01), (2, 0.02))]
    results += [_run("dni8", s, [1.9 + d, 1.6 + d, 1.5 + d, 1.4 + d], per_val_cpu=25.0)
                for s, d in ((0, 0.0), (1, 0.01), (2, 0.02))]
    md = ptb_table.table(results)
    assert "| bptt8 | 3 | 1.6500 / 1.6600 / 1.6700 | 1.6600 | 0.0200 |" in md
    assert "| dni8 | 3 | 1.3500 / 1.3600 / 1.3700 | 1.3600 | 0.0200 |" in md
    assert "within the first 300 training characters" in md  # bptt8's length: the fewest characters
    assert "| dni8 | 1.5000 / 1.5100 / 1.5200 | 1.5100 | 0.0200 |" in md  # dni8's best within 300 chars
    assert "within the first 30 seconds" in md  # bptt8's CPU time: dni8 has validated once by then
    assert "| dni8 | – | – | – |" not in md and "| dni8 | 1.9000 / 1.9100 / 1.9200 | 1.9100 | 0.0200 |" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("- dni8 − bptt8:"))
    assert "converged test BPC -0.3000, larger than the seed spread" in line
    assert "at equal CPU seconds (val BPC) +0.2000, larger than the seed spread" in line
    assert "-0.3000, larger than the seed spread (the seeds do not overlap); seed by seed -0.3000 / -0.3000 / " \
           "-0.3000, the same sign in every seed;" in line


def test_differences_within_the_spread_are_called_so_and_paired_by_seed():
    close = [_run("bptt8", 0, [1.70]), _run("bptt8", 1, [1.72]), _run("dni8", 0, [1.71]), _run("dni8", 1, [1.69])]
    line = next(ln for ln in ptb_table.table(close).splitlines() if ln.startswith("- dni8 − bptt8:"))
    assert "within the seed spread" in line
    assert "seed by seed +0.0100 / -0.0300, not one sign in every seed" in line
    # the seeds overlap, but each seed's pair differs the same way; a seed run by one config only is left
    # out of the comparison (with it, bptt8's mean would be 0.029 lower and the difference change sign)
    shifted = [_run("bptt8", 0, [1.70]), _run("bptt8", 1, [1.72]), _run("bptt8", 2, [1.60]),
               _run("dni8", 0, [1.69]), _run("dni8", 1, [1.715])]
    line = next(ln for ln in ptb_table.table(shifted).splitlines() if ln.startswith("- dni8 − bptt8:"))
    assert "test BPC -0.0075 over seeds 0, 1 (run by both), within the seed spread (the seeds overlap); " \
           "seed by seed -0.0100 / -0.0050, the same sign in every seed" in line
    one = [_run("bptt8", 0, [1.70]), _run("dni8", 0, [1.71])]
    line = next(ln for ln in ptb_table.table(one).splitlines() if ln.startswith("- dni8 − bptt8:"))
    assert "+0.0100, too few seeds to tell; seed by seed +0.0100;" in line


def test_a_run_is_claimed_by_one_process_and_its_training_process_keeps_the_claim(tmp_path):
    import subprocess
    import sys

    lock = ptb_table.claim(tmp_path, "bptt8", 0)
    assert lock is not None and ptb_table.claim(tmp_path, "bptt8", 0) is None  # held
    assert ptb_table.claim(tmp_path, "bptt8", 1) is not None  # another run is free
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                             pass_fds=(lock.fileno(),))
    lock.close()  # the grid command is gone; the run it started still trains
    assert ptb_table.claim(tmp_path, "bptt8", 0) is None
    child.communicate(b"")  # the run ends
    again = ptb_table.claim(tmp_path, "bptt8", 0)
    assert again is not None
    again.close()


def test_the_plateau_panel_shows_every_config_that_got_near_the_best_and_not_a_diverged_one():
    def curve(mean, spread=0.01):
        return [0, 1, 2], mean, [m - spread for m in mean], [m + spread for m in mean]

    curves = {"bptt8": curve([1.9, 1.70, 1.64]), "bptt40": curve([2.1, 1.65, 1.57]),
              "dni8": curve([3.0, 1.80, 1.66]), "diverged": curve([3.5, 2.9, 2.8])}
    low, high = ptb_table.zoom_limits(curves)
    assert low == pytest.approx(1.57 - 0.01 - 0.01)  # under the lowest seed's best
    assert high == pytest.approx(1.66 + ptb_table.ZOOM_MARGIN)  # over the worst best mean that is near
    for name in ("bptt8", "bptt40", "dni8"):
        assert low < min(curves[name][1]) < high
    assert min(curves["diverged"][1]) > high and high - low <= ptb_table.ZOOM_HEIGHT


def test_dni_aux_is_compared_with_bptt8_bptt40_and_its_control_where_both_ran():
    """The paper's claim is DNI + Aux 8 against BPTT-40; its control (M frozen at 0: BPTT-8 with the auxiliary
    loss as a penalty) says what the auxiliary loss gives without any synthetic gradient, against BPTT-8."""
    runs = [_run(n, s, [v + 0.01 * s]) for s in (0, 1)
            for n, v in (("bptt8", 1.67), ("bptt40", 1.60), ("dni8", 1.66), ("dni8-aux", 1.62),
                         ("dni8-aux-m-frozen", 1.63))]
    lines = [ln for ln in ptb_table.table(runs).splitlines() if ln.startswith("- ")]
    heads = [ln.split(":")[0] for ln in lines]
    assert {"- dni8-aux − bptt8", "- dni8-aux − bptt40", "- dni8-aux − dni8-aux-m-frozen",
            "- dni8-aux-m-frozen − bptt8"} <= set(heads)
    frozen = next(ln for ln in lines if ln.startswith("- dni8-aux − dni8-aux-m-frozen:"))
    assert "seed by seed -0.0100 / -0.0100, the same sign in every seed" in frozen
    assert not any("dni8-shuffled" in h for h in heads)  # a control that did not run is left out


def _grid_main(monkeypatch, cwd, *args) -> list[list[str]]:
    """`python scripts/ptb_table.py ARGS` in `cwd`, each training process it starts replaced by one that
    exits 3 at once (a run that did not finish): the command lines it gives them, in order."""
    started = []

    def popen(cmd, **kwargs):
        started.append(cmd)
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], **kwargs)

    monkeypatch.setattr(ptb_table, "subprocess", SimpleNamespace(Popen=popen, STDOUT=subprocess.STDOUT))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["ptb_table.py", *args])
    ptb_table.main()
    return started


def _train_command(config: str, runs, name: str, seed: int) -> list[str]:
    return [sys.executable, "-m", "seqdni.train", "--config", config, f"--seed_everything={seed}",
            f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.logger.init_args.name={name}-s{seed}",
            "--trainer.logger.init_args.version=0", "--trainer.enable_progress_bar=false"]


def test_in_the_repository_the_configs_are_the_files_given_and_the_command_lines_unchanged(monkeypatch, tmp_path):
    """The grid's use from the repository root: `--configs configs/ptb-cpu` trains the files as given, the
    same relative path in every training command and in every run's record (`summarise`'s "config")."""
    out = tmp_path / "grid"
    started = _grid_main(monkeypatch, ROOT, "--configs", "configs/ptb-cpu", "--names", "dni8-aux", "bptt8",
                         "--seeds", "2", "--out", str(out))
    assert started == [_train_command(f"configs/ptb-cpu/{n}.yaml", out / "runs", n, s)
                       for s in (0, 1) for n in ("dni8-aux", "bptt8")]
    paths = ptb_table.config_paths("configs/ptb-cpu", ptb_table.NAMES)  # what summarise records
    assert {n: str(p) for n, p in paths.items()} == {n: f"configs/ptb-cpu/{n}.yaml" for n in ptb_table.NAMES}


def test_from_another_folder_configs_ptb_cpu_are_the_shipped_configs(monkeypatch, tmp_path, capsys):
    """As `python -m seqdni.train --config configs/ptb-cpu/dni8.yaml` does from any folder, the grid finds
    `--configs configs/ptb-cpu` among the configs installed with the package when the folder is not here."""
    started = _grid_main(monkeypatch, tmp_path, "--configs", "configs/ptb-cpu", "--names", "dni8", "--out", "grid")
    shipped = SHIPPED / "ptb-cpu" / "dni8.yaml"
    assert shipped.is_file() and not (tmp_path / "configs").exists()
    assert started == [_train_command(str(shipped), "grid/runs", "dni8", 0)]
    assert "dni8 seed 0 did not finish (exit 3)" in capsys.readouterr().out
    assert json.loads((tmp_path / "grid" / "results.json").read_text())["runs"] == []


def test_a_config_found_nowhere_stops_the_grid_before_any_folder_is_made(monkeypatch, tmp_path):
    with pytest.raises(SystemExit) as stop:
        _grid_main(monkeypatch, tmp_path, "--configs", "configs/ptb-nope", "--names", "bptt8", "dni8", "--out",
                   "grid")
    assert list(tmp_path.iterdir()) == []  # no grid/, no grid/runs
    assert str(stop.value) == ("no config configs/ptb-nope/bptt8.yaml, configs/ptb-nope/dni8.yaml (nor among the "
                               "shipped configs): --configs must hold bptt8, dni8.yaml")


def test_scalars_are_in_the_order_logged_whatever_the_event_files_names(tmp_path):
    """TensorBoard reads a run's event files in name order; two writers of one process started within a
    second are named out of order (…pid.9 after …pid.10). The run's last test score is the last logged."""
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    run.mkdir()
    for step, value, name in ((12, 1.5, "9"), (20, 1.25, "10")):  # the test after fit, then a later `test`
        with SummaryWriter(str(tmp_path / name)) as writer:
            writer.add_scalar("test/bpc", value, step)
        (file,) = (tmp_path / name).glob("events.out.tfevents.*")
        file.rename(run / f"events.out.tfevents.1796000000.host.1.{name}")  # the later one sorts first
    assert [(step, value) for step, _, value in ptb_table.scalars(run)["test/bpc"]] == [(12, 1.5), (20, 1.25)]
