"""`python -m seqdni.train --config configs/ptb-cpu/bptt8.yaml [--overrides]`.

A thin LightningCLI: the typed `__init__` arguments of the model and data classes named in
the config (`model.class_path`, `data.class_path`) are the YAML keys and the `--help` text.
The `fit` subcommand is implied when none is given.
"""

from __future__ import annotations

import sys
from dataclasses import asdict

import lightning as L
from lightning.pytorch.cli import LightningCLI

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class SeqDNICLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # Typed once, in the data module: what the task is and the batch window.
        parser.link_arguments("data.task", "model.init_args.task", compute_fn=asdict, apply_on="instantiate")
        parser.link_arguments("data.window", "model.init_args.window", apply_on="instantiate")

    def after_fit(self) -> None:
        """Test at the best validation checkpoint (or the final weights without one)."""
        if self.trainer.interrupted or not getattr(self.datamodule, "has_test", True):
            return
        best = self.trainer.checkpoint_callback
        ckpt = "best" if best is not None and getattr(best, "best_model_path", "") else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)


def main(args: list[str] | None = None) -> SeqDNICLI:
    def with_fit(a: list[str]) -> list[str]:
        return a if a and a[0] in SUBCOMMANDS + ("-h", "--help") else ["fit", *a]

    if args is None:  # from the command line: imply `fit` in sys.argv itself
        sys.argv[1:] = with_fit(sys.argv[1:])
    else:
        args = with_fit(list(args))
    return SeqDNICLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
