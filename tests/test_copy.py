"""Copy and Repeat Copy: episodes, streams, the curriculum, configs, and DNI carrying N past T."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli import instantiate

from seqdni.callbacks import LatestCheckpoint
from seqdni.copy import (
    CopyDataModule,
    Curriculum,
    EpisodeStreams,
    RepeatCopyDataModule,
    copy_episodes,
    repeat_copy_episodes,
)
from seqdni.dni import DNIOptions
from seqdni.lit import SeqModel

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*(ROOT / "configs/copy").glob("*.yaml"), *(ROOT / "configs/repeat-copy").glob("*.yaml")])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- episodes ---------------------------------------------------------------------------------
def test_copy_episode_layout():
    x, y = copy_episodes(3, 5, 8, gen())
    assert x.shape == (5, 7, 9) and y.shape == (5, 7, 10)
    v = x[:, :3, :8]
    assert set(v.unique().tolist()) == {0.0, 1.0}
    assert (x[:, :, 8] == torch.tensor([0, 0, 0, 1, 0, 0, 0.0])).all()  # the delimiter, once, after the vectors
    assert (x[:, 3:, :8] == 0).all()  # nothing to read during the answer
    assert torch.equal(y[:, 4:, :8], v)  # the answer is the vectors, in order
    assert (y[:, :, 8] == torch.tensor([0, 0, 0, 0, 1, 1, 1.0])).all()  # scored: the answer only
    assert (y[:, :, 9] == torch.tensor([0, 0, 0, 0, 0, 0, 1.0])).all()  # one episode end, on the last step
    assert not torch.equal(v[0], v[1])


@pytest.mark.parametrize("repeats", [1, 3])
def test_repeat_copy_episode_layout(repeats):
    n, max_r = 2, 4
    x, y = repeat_copy_episodes(n, repeats, 4, max_r, 8, gen())
    steps = n + 1 + repeats * n + 1
    assert x.shape == (4, steps, 10) and y.shape == (4, steps, 11)
    v = x[:, :n, :8]
    assert (x[:, :, 8].nonzero()[:, 1] == n).all()  # delimiter after the vectors
    assert (x[:, n, 9] == repeats / max_r).all() and x[:, :, 9].count_nonzero() == 4  # R, on the delimiter only
    assert torch.equal(y[:, n + 1 : steps - 1, :8], v.repeat(1, repeats, 1))  # the block, R times
    assert (y[:, :-1, 8] == 0).all() and (y[:, -1, 8] == 1).all() and (y[:, -1, :8] == 0).all()  # end marker
    assert (y[:, :, 9] == (torch.arange(steps) > n).float()).all()  # every output step scored, marker included
    assert (y[:, :, 10].sum(1) == 1).all() and (y[:, -1, 10] == 1).all()


def test_bad_episode_arguments_are_refused():
    with pytest.raises(ValueError, match="at least one vector"):
        copy_episodes(0, 1, 8, gen())
    with pytest.raises(ValueError, match="repeats <= 2"):
        repeat_copy_episodes(2, 3, 1, 2, 8, gen())
    with pytest.raises(ValueError, match="data.window must be positive"):
        CopyDataModule(window=0)
    with pytest.raises(ValueError, match="data.max_repeats"):
        RepeatCopyDataModule(max_repeats=0)


def split(stream: torch.Tensor) -> list[torch.Tensor]:
    """Episodes of one row (a concatenation of whole episodes), cut at their end flags."""
    ends = (stream[:, -1].nonzero()[:, 0] + 1).tolist()
    return [stream[a:b] for a, b in zip([0, *ends[:-1]], ends)]


@pytest.mark.parametrize("cls", [CopyDataModule, RepeatCopyDataModule])
def test_draw_is_seeded_whole_episodes_at_the_level(cls):
    dm = cls(level=3, seed=0)
    a, b, c = dm.draw(gen(1), 50), dm.draw(gen(1), 50), dm.draw(gen(2), 50)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.size(0) >= 50 and a[-1, -1] == 1  # whole episodes only
    for ep in split(a):
        delim = dm.task.input_size - (2 if cls is RepeatCopyDataModule else 1)
        assert ep[:, delim].nonzero()[:, 0].tolist() == [3]  # N = level = 3 vectors before the delimiter
        mask = ep[:, -2].bool()
        assert torch.equal(ep[mask][:3, dm.x_dim : dm.x_dim + 8], ep[:3, :8])  # the answer copies the input
    if cls is RepeatCopyDataModule:
        lengths = {len(ep) for ep in split(dm.draw(gen(3), 400))}
        assert lengths == {3 + 1 + r * 3 + 1 for r in (1, 2)}  # R drawn from 1..max_repeats


def test_shorter_mixes_lengths_up_to_the_level_in_training_only():
    dm = CopyDataModule(level=4, shorter=0.5, seed=0)
    train = {(len(ep) - 1) // 2 for ep in split(dm.draw(gen(), 500))}
    evaluated = {(len(ep) - 1) // 2 for ep in split(dm.draw(gen(), 500, train=False))}
    assert train == {1, 2, 3, 4} and evaluated == {4}


def columns(loader) -> torch.Tensor:
    return torch.cat([torch.cat([x, y], 2) for x, y in loader], dim=1)


def test_training_streams_continue_episodes_across_batches_and_resume_exactly():
    dm = CopyDataModule(batch_size=3, window=6, level=2, max_lead_in=4, epoch_batches=8, seed=5)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 8 and all(x.shape == (3, 6, 9) and y.shape == (3, 6, 10) for x, y in batches)
    rows = columns(batches)
    crossed = 0
    for row in rows:
        lead = int(row[:, 8].nonzero()[0, 0]) - 2  # blank steps before the first delimiter's episode
        assert 0 <= lead <= 4 and (row[:lead] == 0).all()
        for ep in split(row[lead:]):
            assert len(ep) == 5 and torch.equal(ep[3:, 9:17], ep[:2, :8])
        ends = row[:, -1].nonzero()[:, 0]
        starts = torch.cat([torch.tensor([lead]), ends[:-1] + 1])
        crossed += int(((starts // 6) != (ends // 6)).sum())
    assert crossed > 0  # some episodes are cut by a batch boundary and continue in the next batch
    assert not torch.equal(rows[0, :20], rows[1, :20])  # rows are independent streams

    again = dm.train_dataloader()  # a resume after 3 batches: same stream from batch 4 on
    it = iter(again)
    for _ in range(3):
        next(it)
    state = again.state_dict()
    resumed = EpisodeStreams(dm.draw, dm.channels, dm.x_dim, 3, 6, 8, seed=999, max_lead_in=4)
    resumed.load_state_dict(state)
    assert torch.equal(columns(resumed), rows[:, 18:])


def test_validation_set_is_fixed_follows_the_level_and_scores_whole_episodes():
    dm = CopyDataModule(level=2, eval_batch_size=4, eval_window=8, eval_batches=3, seed=0)
    val = dm.val_dataloader()
    a, b = columns(val), columns(val)
    assert a.shape == (4, 24, 19) and torch.equal(a, b)
    for row in a:  # 24 steps hold four 5-step episodes; the fifth is cut in its answer and not scored
        assert row[:, -1].sum() == 4 and row[20:, -2].sum() == 0 and row[:20, -2].sum() == 8
    dm.level = 3
    c = columns(val)
    assert c[0, :, -1].nonzero()[:, 0].tolist() == [6, 13, 20]  # 7-step episodes at level 3
    x, y = dm.probe_batch(2, 30)
    assert x.shape == (2, 30, 9) and y.shape == (2, 30, 10)


# ---- the curriculum ---------------------------------------------------------------------------
def fake_trainer(dm, step: int = 0):
    return SimpleNamespace(datamodule=dm, sanity_checking=False, state=SimpleNamespace(fn="fit"), loggers=[],
                           log_dir=None, is_global_zero=True, global_step=step, callback_metrics={},
                           should_stop=False)


def test_curriculum_advances_only_when_the_criterion_holds():
    dm = CopyDataModule(seed=0)
    cur = Curriculum(threshold=0.25, patience=2, max_level=3)  # 0.25: exact in float32, so "below" is tested
    trainer, module = fake_trainer(dm), SimpleNamespace(hparams={"unroll": 3})
    levels = []
    for i, err in enumerate([0.5, 0.1, 0.3, 0.1, 0.2, 0.1, 0.25, 0.0, 0.0, 0.0, 0.01]):
        trainer.global_step, trainer.callback_metrics = i, {"val/bits_error": torch.tensor(err)}
        cur.on_validation_end(trainer, module)
        levels.append(dm.level)
        if trainer.should_stop:
            break
    # below 0.25 twice in a row (0.1, 0.2) -> 2; once then 0.25 (not below) -> stays; 0.0 twice -> 3; twice -> stop
    assert levels == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4]
    assert cur.solved == 3 and trainer.should_stop
    assert [h["level"] for h in cur.history] == [1] + levels[:-1]  # each validation's level when measured
    with pytest.raises(KeyError, match="val/bits_error"):
        trainer.callback_metrics = {"val/bpc": torch.tensor(1.0)}
        cur.on_validation_end(trainer, module)
    with pytest.raises(ValueError, match="needs a data module with a `level`"):
        cur.on_fit_start(fake_trainer(object()), module)


# ---- configs ----------------------------------------------------------------------------------
def test_config_grid_is_complete_and_sets_differ_only_in_unroll_and_dni():
    for task in ("copy", "repeat-copy"):
        names = {p.stem for p in (ROOT / "configs" / task).glob("*.yaml")}
        assert names == {f"{v}{t}{a}" for t in (2, 3, 4, 5) for v, a in (("bptt", ""), ("dni", ""), ("dni", "-aux"))}
        base = yaml.safe_load((ROOT / "configs" / task / "bptt2.yaml").read_text())
        for path in (ROOT / "configs" / task).glob("*.yaml"):
            cfg = yaml.safe_load(path.read_text())
            for c in (cfg, ref := yaml.safe_load(yaml.safe_dump(base))):
                c["model"]["init_args"].pop("unroll"), c["model"]["init_args"].pop("dni", None)
                c["trainer"]["logger"]["init_args"].pop("name")
            assert cfg == ref, path


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_copy_config_parses_and_instantiates(config, tmp_path):
    cli = instantiate(config, tmp_path)
    model, dm = cli.model, cli.datamodule
    name = config.stem
    assert model.hparams.window % model.hparams.unroll == 0
    assert model.task.name == config.parent.name == dm.task.name  # linked from the data module
    assert model.hparams.unroll == int(name.split("-")[0][-1])
    assert (model.dni is not None) == name.startswith("dni")
    assert (model.dni is not None and model.dni.aux_weight > 0) == name.endswith("-aux")
    assert any(isinstance(cb, Curriculum) for cb in cli.trainer.callbacks)


# ---- training ---------------------------------------------------------------------------------
def trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, default_root_dir=str(tmp_path), max_epochs=-1, check_val_every_n_epoch=None)
    args.update(kw)
    return L.Trainer(**args)


def tiny_run(tmp_path, dni: DNIOptions | None, steps: int, seed: int = 1) -> tuple[Curriculum, CopyDataModule]:
    """Copy of 2-bit vectors with T = 2, where N = 2 puts 3 steps between a vector and its copy."""
    L.seed_everything(seed, verbose=False)
    dm = CopyDataModule(batch_size=16, window=60, bits=2, shorter=0.3)
    lit = SeqModel(dm.task, window=60, unroll=2, embed_dim=16, hidden_size=32, lr=3e-3, dni=dni)
    cur = Curriculum(threshold=0.15, max_level=2)
    trainer(tmp_path, max_steps=steps, val_check_interval=10, callbacks=[cur], enable_checkpointing=False).fit(lit, dm)
    return cur, dm


@pytest.mark.slow
def test_dni_solves_n_beyond_the_truncation_where_bptt_does_not(tmp_path):
    cur, dm = tiny_run(tmp_path, DNIOptions(scale=0.3), steps=3000)
    assert cur.solved == 2 and dm.level == 3  # N = 2 solved with T = 2 (then stopped by max_level)
    assert cur.history[-1]["bits_error"] < 0.15
    bptt, _ = tiny_run(tmp_path, None, steps=cur.history[-1]["step"])  # the same budget, without DNI
    assert bptt.solved < 2


class Losses(L.Callback):
    def __init__(self):
        self.losses, self.levels = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(trainer.callback_metrics["train/loss"].item())
        self.levels.append(trainer.datamodule.level)


@pytest.mark.parametrize("dni", [None, DNIOptions(aux_weight=0.1)])
def test_resume_continues_the_stream_and_the_curriculum_exactly(tmp_path, dni):
    def data():
        return RepeatCopyDataModule(batch_size=4, window=12, epoch_batches=6, eval_batch_size=4, eval_window=12,
                                    eval_batches=1, seed=3)

    def model(seed):
        L.seed_everything(seed, verbose=False)
        return SeqModel(data().task, window=12, unroll=3, embed_dim=8, hidden_size=16, lr=1e-2, dni=dni)

    def run(root, steps, callbacks, ckpt=None):
        cur = Curriculum(threshold=1e9)  # every validation advances: the level changes during the run
        trainer(root, max_steps=steps, val_check_interval=3, callbacks=[cur, *callbacks]).fit(
            model(0 if ckpt is None else 99), dm := data(), ckpt_path=ckpt)
        return cur, dm

    one = Losses()
    cur_one, _ = run(tmp_path / "one", 4 * 14, [one])
    first, second = Losses(), Losses()
    latest = LatestCheckpoint(every_n_batches=1000, dirpath=str(tmp_path / "two"))
    run(tmp_path / "two", 4 * 8, [first, latest])  # cut mid-epoch, between validations
    cur_two, dm = run(tmp_path / "two", 4 * 14, [second, LatestCheckpoint(dirpath=str(tmp_path / "two"))],
                      ckpt=latest.last_path)
    assert len(first.losses) == 8 and len(second.losses) == 6
    assert first.losses + second.losses == pytest.approx(one.losses, rel=1e-6, abs=1e-7)
    assert first.levels + second.levels == one.levels and one.levels[-1] > one.levels[0]
    assert cur_two.history == cur_one.history and cur_two.solved == cur_one.solved


# ---- the command lines ------------------------------------------------------------------------
def run_cmd(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_table_script_trains_the_configs_writes_table_and_plots_and_reuses_runs(tmp_path):
    args = ["scripts/copy_table.py", "--steps", "60", "--tasks", "repeat-copy", "--unrolls", "3", "--variants",
            "bptt", "dni", "--out", str(tmp_path / "grid"), "--extra", "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1"]
    res = run_cmd(args, ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = tmp_path / "grid"
    table = (out / "table.md").read_text()
    assert "| repeat-copy | 3 |" in table and "| 5 / 33 |" in table  # ours beside the paper's BPTT / DNI
    summary = json.loads((out / "results.json").read_text())
    assert [(r["variant"], r["steps"], r["returncode"]) for r in summary["runs"]] == [("bptt", 60, 0), ("dni", 60, 0)]
    for r in summary["runs"]:
        assert r["history"] and r["history"][-1]["step"] <= 60 and r["solved"] >= 0
    run_dir = out / "repeat-copy/dni3/seed1"
    assert (run_dir / "curriculum.json").is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"curriculum/level", "curriculum/solved", "val/bits_error", "sg/loss"} <= set(events.Tags()["scalars"])
    assert (out / "repeat-copy.png").stat().st_size > 0 and len(list((out / "plots").glob("*.png"))) == 2
    again = run_cmd(args, ROOT)
    assert again.returncode == 0 and all(r["reused"] for r in json.loads((out / "results.json").read_text())["runs"])
