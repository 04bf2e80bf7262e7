"""Feed-forward data: binary addition, the 8×8 digit images, MNIST offline, shuffled batches."""

from __future__ import annotations

import pytest
import torch

from seqdni.data import MNIST, BinaryAddition, DigitImages, ShuffledBatches
from seqdni.data.examples import add_bits
from seqdni.errors import MissingInput, UserError


def as_int(bits: torch.Tensor) -> list[int]:
    return [sum(int(b) << i for i, b in enumerate(row)) for row in bits]


@pytest.mark.parametrize("bits", [3, 8, 40])
def test_the_target_is_the_sum_of_the_two_numbers(bits):
    dm = BinaryAddition(bits=bits, train_size=40, eval_size=10, seed=1)
    x, y = dm.split("train")
    assert x.shape == (40, 2 * bits) and y.shape == (40, bits + 1) and dm.task.input_size == 2 * bits
    a, b, s = as_int(x[:, :bits]), as_int(x[:, bits:]), as_int(y)
    assert s == [p + q for p, q in zip(a, b)]


def test_add_bits_carries_through_every_bit():
    ones = torch.ones(1, 5, dtype=torch.long)
    assert add_bits(ones, ones).tolist() == [[0, 1, 1, 1, 1, 1]]  # 31 + 31 = 62


def test_addition_splits_share_no_pair_and_are_fixed_by_the_seed():
    dm = BinaryAddition(bits=4, train_size=200, eval_size=28, seed=3)
    rows = {name: {tuple(r.tolist()) for r in dm.split(name)[0]} for name in ("train", "valid", "test")}
    assert sum(map(len, rows.values())) == 256  # every pair of 4-bit numbers, once
    assert torch.equal(BinaryAddition(bits=4, train_size=200, eval_size=28, seed=3).split("test")[0],
                       dm.split("test")[0])
    with pytest.raises(UserError, match="data.train_size"):
        BinaryAddition(bits=2, train_size=20, eval_size=1).split("train")


def test_digit_images_split_is_fixed_by_split_seed_not_by_seed():
    a, b = DigitImages(seed=0), DigitImages(seed=5)
    c = DigitImages(split_seed=1)
    assert torch.equal(a.split("test")[0], b.split("test")[0])
    assert not torch.equal(a.split("test")[0], c.split("test")[0])
    sizes = {n: a.split(n)[0].size(0) for n in ("train", "valid", "test")}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 359
    x, y = a.split("train")
    assert x.shape[1] == 64 and 0 <= x.min() and x.max() <= 1 and set(y.tolist()) == set(range(10))


def test_shuffled_batches_cover_the_split_in_a_new_order_each_epoch():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    loader = ShuffledBatches(x, y, 3, shuffle=True, seed=0)
    epochs = [torch.cat([b[1] for b in loader]) for _ in range(2)]
    assert len(loader) == 3 and all(len(set(e.tolist())) == 9 for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])
    assert torch.cat([b[1] for b in ShuffledBatches(x, y, 4)]).tolist() == list(range(10))


def test_mnist_offline_says_so_and_what_to_do(tmp_path, monkeypatch, hf_offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingInput, match="HF_HUB_OFFLINE is set") as err:
        MNIST(cache_dir=str(tmp_path / "mnist")).prepare_data()
    assert "MNIST" in str(err.value) and "digits" in str(err.value)
