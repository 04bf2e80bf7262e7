"""The Copy and Repeat Copy data modules: seeded episodes at the curriculum level, training streams
that continue episodes across batches and resume exactly, a fixed validation set."""

from __future__ import annotations

import pytest
import torch

from seqdni.data import CopyDataModule, RepeatCopyDataModule
from seqdni.data.episodes import EpisodeStreams
from seqdni.errors import UserError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def split(stream: torch.Tensor) -> list[torch.Tensor]:
    """Episodes of one row (a concatenation of whole episodes), cut at their end flags."""
    ends = (stream[:, -1].nonzero()[:, 0] + 1).tolist()
    return [stream[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def columns(loader) -> torch.Tensor:
    return torch.cat([torch.cat([x, y], 2) for x, y in loader], dim=1)


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


@pytest.mark.parametrize("cls", [CopyDataModule, RepeatCopyDataModule])
def test_whole_episodes_windows_cut_no_episode(cls):
    """Every training window holds whole episodes only, then blank unscored steps; the episode a
    window would have cut starts the row's next window. Without the option, windows cut episodes."""
    kw = dict(batch_size=4, window=12, level=3, shorter=0.5, max_lead_in=4, epoch_batches=10, seed=5, resets=True)
    start = cls(**kw).x_dim - 1  # the episode-start flag
    lengths = {int(cls(**kw).episode_length(torch.tensor(n), torch.tensor(r))) for n in (1, 2, 3) for r in (1, 2)}
    for whole in (True, False):
        cut = 0
        for b, (x, y) in enumerate(cls(**kw, whole_episodes=whole).train_dataloader()):
            for row in torch.cat([x, y], 2):
                starts, ends = row[:, start].nonzero()[:, 0], row[:, -1].nonzero()[:, 0]
                cut += len(starts) != len(ends) or bool((starts > ends).any())
                if whole:
                    assert (b == 0 or starts[0] == 0) and len(starts) == len(ends) > 0
                    assert {int(n) for n in ends - starts + 1} <= lengths  # whole episodes
                    assert (row[int(ends[-1]) + 1 :] == 0).all()  # then blank: no input, no loss
        assert (cut == 0) == whole


def test_whole_episodes_refuse_lookahead():
    with pytest.raises(UserError, match="data.lookahead"):
        CopyDataModule(whole_episodes=True, lookahead=4).train_dataloader()


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


def test_probe_windows_follow_the_level_and_put_the_rows_out_of_phase():
    """The probe asks for its window at every probe: at the current level, each row at its own phase,
    so the probed boundary does not fall at the same step of an episode in every row."""
    dm = CopyDataModule(level=2, seed=0)
    x, y = dm.probe_batch(8, 40)
    assert torch.equal(x, dm.probe_batch(8, 40)[0])  # fixed for a level
    ends = y[..., -1]
    assert len({int(e.nonzero()[0, 0]) for e in ends}) > 1  # rows out of phase
    assert {int(d) for e in ends for d in e.nonzero()[:, 0].diff()} == {5}  # 5-step episodes at level 2
    dm.level = 4
    assert {int(d) for e in dm.probe_batch(8, 40)[1][..., -1] for d in e.nonzero()[:, 0].diff()} == {9}


def test_lookahead_targets_are_the_next_batchs_first_targets():
    dm = CopyDataModule(batch_size=3, window=6, level=2, max_lead_in=4, seed=0, lookahead=4)
    batches = list(zip(range(5), dm.train_dataloader()))
    for (_, (x, y)), (_, (_, y_next)) in zip(batches, batches[1:]):
        assert x.shape == (3, 6, dm.x_dim) and y.shape == (3, 10, dm.task.output_size + 2)
        assert torch.equal(y[:, 6:], y_next[:, :4])


def test_bad_lookahead_is_refused():
    with pytest.raises(ValueError, match="data.lookahead must be >= 0"):
        CopyDataModule(lookahead=-1)
