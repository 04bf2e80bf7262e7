"""Does DNI's lead on Copy need M to say something different of each stream?

The control: the core receives α · mean_b M(s_b), the mean of M's predictions over the batch's
streams, at every boundary, instead of each stream's own M(s_b). M, its targets (which still
bootstrap on each stream's own prediction) and everything else are as in the config. If DNI's
levels survive the pooling, what it passes on is a direction common to all streams, not credit
for what each stream read.

    python scripts/copy_pooled_m.py --steps 27000 --seeds 3 --jobs 2 --tasks copy --unrolls 2 3 --out runs/copy-pooled

takes `scripts/copy_table.py`'s arguments (DNI configs only: `--variants dni` is implied) and
writes the same files. One run in this process: `python scripts/copy_pooled_m.py --run --config
configs/copy/dni2.yaml [seqdni.train arguments]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from seqdni.dni import Interface

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
import copy_table  # noqa: E402  (the grid, its records and its plots)

_inject = Interface.inject
_command = copy_table.train_command


def pooled_inject(self: Interface, value, g, n_send: float, batch_dim: int = 1):
    """`Interface.inject` with each stream's prediction replaced by the batch's mean prediction."""
    return _inject(self, value, g.mean(dim=0, keepdim=True).expand_as(g), n_send, batch_dim)


def pooled_train_command(*args, **kwargs) -> list[str]:
    cmd = _command(*args, **kwargs)
    assert cmd[1:3] == ["-m", "seqdni.train"], cmd
    return [cmd[0], str(HERE), "--run", *cmd[3:]]


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run"]:
        from seqdni.cli.train import main as train

        Interface.inject = pooled_inject
        sys.argv = [sys.argv[0], *argv[1:]]
        return train()
    copy_table.train_command = pooled_train_command
    try:
        return copy_table.main(["--variants", "dni", *argv])  # before any --extra, which takes the rest
    finally:
        copy_table.train_command = _command


if __name__ == "__main__":
    main()
