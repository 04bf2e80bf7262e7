"""Copy a Copy DNI checkpoint (256 units, linear M on tanh(s)) with some of M's settings changed, to
continue a stuck run under them: `--experts K` gives M gated experts (zero at the start, so M's
function is unchanged) and resets M's Adam state; `--set key=value` changes a `model.dni` setting
that has no weights (e.g. scale=2.0); `--core-lr` changes the core's learning rate (config,
optimiser and schedule). Resume the copy with the same settings on the command line.

    python docs/copy/richer-m/barrier_checkpoint.py SRC.ckpt DST.ckpt [--experts 8] [--set scale=2.0] [--core-lr 1e-3]
"""
import argparse

import torch

from seqdni.dni import SyntheticGradient

p = argparse.ArgumentParser()
p.add_argument("src")
p.add_argument("dst")
p.add_argument("--experts", type=int, default=0)
p.add_argument("--set", nargs="*", default=[])
p.add_argument("--core-lr", type=float)
a = p.parse_args()
ck = torch.load(a.src, map_location="cpu", weights_only=False)
dni = ck["seqdni"]["config"]["model"]["init_args"]["dni"]
for kv in a.set:
    key, value = kv.split("=")
    dni[key] = type(dni[key])(value) if dni.get(key) is not None else float(value)
if a.core_lr:
    ck["seqdni"]["config"]["model"]["init_args"]["lr"] = a.core_lr
    ck["optimizer_states"][0]["param_groups"][0]["lr"] = a.core_lr
    ck["optimizer_states"][0]["param_groups"][0]["initial_lr"] = a.core_lr
    ck["lr_schedulers"][0]["base_lrs"] = ck["lr_schedulers"][0]["_last_lr"] = [a.core_lr]
if a.experts:
    dni.update(experts=a.experts, expert_rank=32)
    torch.manual_seed(0)
    m = SyntheticGradient(512, experts=a.experts, expert_rank=32, squash=True)
    for k, v in m.experts.state_dict().items():
        ck["state_dict"][f"engine.boundary.sg.experts.{k}"] = v
    ck["optimizer_states"][1]["state"] = {}
    ck["optimizer_states"][1]["param_groups"][0]["params"] = list(range(6))
torch.save(ck, a.dst)
