"""Image classification for decoupled feed-forward networks: scikit-learn's bundled 8×8 digits
(offline, 1797 images) and MNIST through the `datasets` hub (fetched once, then cached).

Pixels are scaled to [0, 1] and flattened: an image is one input vector.
"""

from __future__ import annotations

import torch

from seqdni.data.examples import ExampleData, Split
from seqdni.data.ptb import hub_unreachable
from seqdni.data.task import Task
from seqdni.errors import MissingInput, UserError

MNIST_DATASET = "ylecun/mnist"


def seeded_split(n: int, test_fraction: float, val_fraction: float, seed: int) -> dict[str, torch.Tensor]:
    """Indices of a fixed train / valid / test split of n examples, drawn from `seed`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return {"test": order[:n_test], "valid": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}


class DigitImages(ExampleData):
    """scikit-learn's 8×8 handwritten digits (bundled with the library, no download): 1797 images of
    64 pixels, 10 classes, in a fixed train / validation / test split drawn from `split_seed`.

    Args:
        test_fraction: Share of the images held out for the test split.
        val_fraction: Share held out for validation.
        split_seed: Seed of the split (fixed across training seeds, so every run tests on the same images).
        batch_size: Training examples per batch.
        eval_batch_size: Examples per evaluation batch.
        seed: Seed of the shuffling.
    """

    def __init__(self, test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0,
                 batch_size: int = 64, eval_batch_size: int = 512, seed: int = 0):
        super().__init__(batch_size, eval_batch_size, seed)
        if not (0 < test_fraction and 0 < val_fraction and test_fraction + val_fraction < 1):
            raise UserError(f"data.test_fraction ({test_fraction}) and data.val_fraction ({val_fraction}) must be "
                            "positive and together below 1")
        self.test_fraction, self.val_fraction, self.split_seed = test_fraction, val_fraction, split_seed

    @property
    def task(self) -> Task:
        return Task("digits", input_size=64, output_size=10, classes=10)

    def splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target, dtype=torch.long)
        idx = seeded_split(len(y), self.test_fraction, self.val_fraction, self.split_seed)
        return {name: (x[i], y[i]) for name, i in idx.items()}


class MNIST(ExampleData):
    """MNIST (28×28 digits, 60000 training and 10000 test images) from the hub copy `ylecun/mnist`,
    downloaded once by `datasets` into its cache. The last `val_size` training images (in a fixed
    order) are the validation split. Offline and uncached, setup stops with an error saying so.

    Args:
        val_size: Training images held out for validation.
        cache_dir: Where `datasets` keeps its copy (unset: its default cache).
        batch_size: Training examples per batch.
        eval_batch_size: Examples per evaluation batch.
        seed: Seed of the shuffling.
    """

    def __init__(self, val_size: int = 5000, cache_dir: str | None = None, batch_size: int = 64,
                 eval_batch_size: int = 1000, seed: int = 0):
        super().__init__(batch_size, eval_batch_size, seed)
        if not 0 < val_size < 60000:
            raise UserError(f"data.val_size must be between 1 and 59999 training images, got {val_size}")
        self.val_size, self.cache_dir = val_size, cache_dir

    @property
    def task(self) -> Task:
        return Task("mnist", input_size=784, output_size=10, classes=10)

    def prepare_data(self) -> None:
        self._load()

    def _load(self):
        """The dataset from the `datasets` cache, or fetched once. When the hub is evidently out of reach
        (offline mode, no route) only the cache is read, so an offline machine fails at once."""
        import datasets

        reason = hub_unreachable()
        offline = datasets.config.HF_HUB_OFFLINE
        try:
            datasets.config.HF_HUB_OFFLINE = offline or reason is not None
            return datasets.load_dataset(MNIST_DATASET, cache_dir=self.cache_dir)
        except Exception as err:  # offline, hub down, not cached: all end the same way
            reason = reason or f"fetching it failed ({type(err).__name__}: {(str(err).splitlines() or [''])[0]})"
            raise MissingInput(
                f"MNIST is not in the `datasets` cache ({self.cache_dir or 'its default folder'}) and cannot be "
                f"fetched from the hub copy {MNIST_DATASET}: {reason}. Run once where the hub is reachable to "
                "fetch it (data.cache_dir sets where it is kept), or train on the bundled 8×8 digits "
                "(configs/ff/digits-*.yaml)."
            ) from err
        finally:
            datasets.config.HF_HUB_OFFLINE = offline

    def splits(self) -> dict[str, Split]:
        dd = self._load().with_format("numpy")

        def tensors(ds) -> Split:
            x = torch.as_tensor(ds["image"], dtype=torch.float32).flatten(1) / 255.0
            return x, torch.as_tensor(ds["label"], dtype=torch.long)

        (x, y), test = tensors(dd["train"]), tensors(dd["test"])
        cut = x.size(0) - self.val_size
        return {"train": (x[:cut], y[:cut]), "valid": (x[cut:], y[cut:]), "test": test}
