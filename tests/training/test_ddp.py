"""Multi-process training (Lightning DDP, gloo on CPU): sharded streams, synchronised models."""

from __future__ import annotations

import json
import random
import socket
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_python

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"
SIGTERM_WORKER = WORKER.with_name("ddp_sigterm_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gloo_env() -> dict[str, str]:
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    if sys.platform.startswith("linux"):  # gloo over loopback: no dependence on the host name resolving
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def run(out: Path, mode: str, variant: str) -> None:
    res = run_python([str(WORKER), str(out), str(out), mode, variant], cwd=out, **gloo_env())
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["aux", "least-squares"])
def test_two_gloo_ranks_stay_identical_see_disjoint_streams_and_match_one_process(tmp_path, variant):
    """DNI + Aux: the core, the SG model and the Aux head all learn from separate backward passes.
    A least-squares M: its moments are averaged over the ranks, so it is the fit of all streams."""
    rng = random.Random(0)  # random letters: no two windows of the stream coincide by chance
    (tmp_path / "train.txt").write_text("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(2000)))
    (tmp_path / "valid.txt").write_text("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(400)))
    run(tmp_path, "ddp", variant)
    run(tmp_path, "single", variant)
    r0, r1 = (torch.load(tmp_path / f"ddp-rank{r}.pt") for r in (0, 1))
    one = torch.load(tmp_path / "single-rank0.pt")
    assert r0["steps"] == r1["steps"] == one["steps"] == 12

    # Every parameter, the SG model's and the Aux head's included, is the same on both ranks.
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k

    # Each rank trained on its own streams: no window in common, and together they are
    # exactly the windows one process with all the streams trains on.
    w0, w1 = {tuple(w) for w in r0["windows"]}, {tuple(w) for w in r1["windows"]}
    assert w0 and w1 and not w0 & w1
    assert sorted(r0["windows"] + r1["windows"]) == sorted(one["windows"])

    # Averaging gradients over ranks equals one process on all streams: same parameters
    # (up to the order of floating-point sums), same validation BPC.
    for k in one["params"]:
        torch.testing.assert_close(r0["params"][k], one["params"][k], rtol=1e-4, atol=1e-5, msg=k)
    assert r0["val_bpc"] == pytest.approx(one["val_bpc"], rel=1e-4)

    # The checkpoint keeps every rank's own recurrent state, so a resumed rank continues its streams.
    saved = torch.load(tmp_path / "ddp.ckpt", weights_only=True)["seqdni"]["carry"]["state"]
    for i, t in enumerate(saved):
        assert torch.equal(t[0], r0["carry"][i]) and torch.equal(t[1], r1["carry"][i])
        assert not torch.equal(t[0], t[1])


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("when", ["train", "validation", "sanity"])
def test_a_sigterm_to_one_rank_stops_every_rank_at_one_saved_step(tmp_path, rank, when):
    """`kill` of the command signals rank 0, which passes it on to the ranks it started; a scheduler may
    signal any one. Every rank saves and stops at the same point (a rank that trained on would wait
    for the others forever at its next collective; Lightning's own handler deadlocks here)."""
    rng = random.Random(0)
    (tmp_path / "train.txt").write_text("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(2000)))
    (tmp_path / "valid.txt").write_text("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(400)))
    res = run_python([str(SIGTERM_WORKER), str(tmp_path), str(tmp_path), when], cwd=tmp_path,
                     SIGTERM_RANK=str(rank), **gloo_env())
    assert res.returncode == 0, res.stderr[-3000:]
    stopped = [json.loads((tmp_path / f"stopped-rank{r}.json").read_text()) for r in (0, 1)]
    step = 2 * {"train": 3, "validation": 4, "sanity": 1}[when]  # after batch 2, batch 3's validation, batch 0
    assert stopped == [{"step": step, "interrupted": True}] * 2
    assert torch.load(tmp_path / "c" / "latest.ckpt", weights_only=True)["global_step"] == step
