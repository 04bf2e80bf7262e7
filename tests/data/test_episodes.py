"""Copy and Repeat Copy episodes: the layout of inputs, targets, loss mask and episode end."""

from __future__ import annotations

import pytest
import torch

from seqdni.data import CopyDataModule, RepeatCopyDataModule
from seqdni.data.episodes import copy_episodes, repeat_copy_episodes


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    with pytest.raises(ValueError, match="data.eval_warmup"):
        CopyDataModule(eval_warmup=-1)


@pytest.mark.parametrize("module", [CopyDataModule, RepeatCopyDataModule])
def test_eval_warmup_leaves_the_first_episodes_of_each_row_unscored_and_uncounted(module):
    """Validation with `eval_warmup: k`: the same episodes, the first k of each row neither scored (mask)
    nor counted (episode end), every later step exactly as with no warm-up."""
    def grid(warmup):
        dm = module(level=3, eval_batch_size=5, eval_window=40, eval_batches=2, eval_warmup=warmup, seed=7)
        return next(iter(dm.val_dataloader())), dm.x_dim

    (x0, y0), _ = grid(0)
    (x2, y2), _ = grid(2)
    assert torch.equal(x0, x2)
    ends = y0[..., -1]
    assert (ends.sum(1) > 2).all()  # every row has episodes left to score
    assert torch.equal(y2[..., -1].sum(1), ends.sum(1) - 2)
    second_end = (ends.cumsum(1) == 2).float().argmax(1)  # the step that ends each row's second episode
    for r, cut in enumerate(second_end.tolist()):
        assert (y2[r, : cut + 1, -2:] == 0).all()
        assert torch.equal(y2[r, cut + 1 :], y0[r, cut + 1 :])
        assert y0[r, : cut + 1, -2].sum() > 0  # the warm-up really hid scored steps
