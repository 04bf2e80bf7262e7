"""The training module logs the norm of every carried state tensor (`state/<name>_norm`)."""

from __future__ import annotations

import math

import lightning as L
import torch
from helpers import seq_model, trainer


class Seen(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        h, c = pl_module.carry.state
        self.rows.append({k: trainer.callback_metrics[k].item() for k in ("state/h_norm", "state/c_norm")}
                         | {"h": h.movedim(1, 0).flatten(1).norm(dim=1).mean().item(),
                            "c": c.movedim(1, 0).flatten(1).norm(dim=1).mean().item()})


def test_state_norms_are_the_carried_states_norms(tmp_path, tiny_data):
    dm = tiny_data()
    model = seq_model(dm, hidden_size=16)
    seen = Seen()
    trainer(tmp_path, max_steps=8, log_every_n_steps=1, callbacks=[seen]).fit(model, datamodule=dm)
    assert len(seen.rows) == 4
    for row in seen.rows:
        assert math.isclose(row["state/h_norm"], row["h"], rel_tol=1e-6)
        assert math.isclose(row["state/c_norm"], row["c"], rel_tol=1e-6)
        assert 0 < row["state/h_norm"] <= math.sqrt(16)  # |h| < 1 per unit
    assert torch.tensor([r["state/c_norm"] for r in seen.rows]).std() > 0  # it follows the state
