"""The blocks of a `BlockMLP` in a pipeline of processes, one block each (torch.distributed).

Rank r holds block r. Activations travel forward (r -> r + 1) and gradients backward
(r + 1 -> r) by point-to-point `send` / `recv` (gloo on CPU, NCCL on GPU). Every rank reads the
same batches in the same order (labels are at hand where cDNI needs them); only rank 0 uses x and
only the last rank the loss.

`run_dni`, update unlocking: rank r < K-1 steps block r on batch t as soon as M_r(h_r) is known,
sends h_r on and goes on to batch t + 1; M_r's target for batch t (from rank r + 1: the true
gradient at the last cut, the next block's synthetic gradient backpropagated elsewhere) is waited
for only after batch t + 1's update. So the ranks work on different batches at the same time.

`run_gpipe`, the synchronous baseline (GPipe): each batch is cut into micro-batches, all of them
go forward through the pipeline, then backward with the true gradients, then every block steps;
the update equals backpropagation's on the whole batch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

from seqdni.dni import Interface, bootstrap_target, cosine

Batches = Iterator[tuple[Tensor, Tensor]]


@dataclass
class Stage:
    """This rank's piece of the pipeline.

    Args:
        block: Block r (the whole network when there is one rank).
        loss: The network's mean loss (read on the last rank).
        opt: Block r's optimiser.
        sg: M_r at the block's output (None on the last rank, and for `run_gpipe`).
        sg_opt: M_r's optimiser.
        condition: y -> M's conditioning input (cDNI), or None.
        widths: Features at the block's input and output (what `recv` allocates).
        batch: Examples per batch (every batch is full).
        clip: Gradient-norm clip of the block; 0 disables (M's is in `sg.opts.clip`).
        record: Steps at which to keep the block's weights, input, synthetic gradient and
            parameter gradients (what a test checks an update against).
    """

    block: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]
    opt: torch.optim.Optimizer
    widths: tuple[int, int]
    batch: int
    sg: Interface | None = None
    sg_opt: torch.optim.Optimizer | None = None
    condition: Callable[[Tensor], Tensor] | None = None
    clip: float = 0.0
    record: set[int] = field(default_factory=set)
    rank: int = 0
    world: int = 1
    history: list[dict] = field(default_factory=list)
    trace: dict[int, dict] = field(default_factory=dict)
    sends: deque = field(default_factory=deque)

    @property
    def last(self) -> bool:
        return self.rank == self.world - 1

    def recv(self, rows: int, width: int, src: int) -> Tensor:
        buf = torch.empty(rows, width, device=next(self.block.parameters()).device)
        dist.recv(buf, src)
        return buf

    def isend(self, t: Tensor, dst: int) -> None:
        t = t.detach().contiguous()
        self.sends.append((dist.isend(t, dst), t))  # the tensor stays alive until the send completes
        while len(self.sends) > 8:
            self.sends.popleft()[0].wait()

    def flush(self) -> None:
        while self.sends:
            self.sends.popleft()[0].wait()

    def step_block(self, t: int, x: Tensor, g: Tensor | None) -> None:
        if t in self.record:
            self.trace[t] = {"input": x.detach().clone(), "sg": None if g is None else g.clone(),
                             "grads": [p.grad.clone() for p in self.block.parameters()],
                             "weights": {k: v.clone() for k, v in self.block.state_dict().items()}}
        if self.clip > 0:
            nn.utils.clip_grad_norm_(self.block.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _input(stage: Stage, x: Tensor, rows: int) -> Tensor:
    inp = x if stage.rank == 0 else stage.recv(rows, stage.widths[0], stage.rank - 1)
    return inp.detach().requires_grad_(stage.rank > 0)


def _learn(stage: Stage, t: int, h: Tensor, cond: Tensor | None, target: Tensor) -> None:
    """M_r's regression on the target that rank r + 1 sent for batch t."""
    sg_loss, prediction = stage.sg.learn(h, target, cond)
    sg_loss.backward()
    if stage.sg.opts.clip > 0:
        nn.utils.clip_grad_norm_(stage.sg.parameters(), stage.sg.opts.clip)
    stage.sg_opt.step()
    stage.sg_opt.zero_grad(set_to_none=True)
    stage.history[t].update(sg_loss=sg_loss.item(), sg_cosine=cosine(prediction, target).item())


def _dni_step(stage: Stage, t: int, x: Tensor, y: Tensor, pending: deque) -> None:
    leaf = _input(stage, x, stage.batch)
    h = stage.block(leaf)
    record = {"step": t}
    stage.history.append(record)
    if stage.last:
        loss = stage.loss(h, y)
        loss.backward()
        record["loss"] = loss.item()
        stage.step_block(t, leaf, None)
    else:
        stage.isend(h, stage.rank + 1)
        cond = stage.condition(y) if stage.condition is not None else None
        g = stage.sg.predict(h, cond, batch_dim=0)
        stage.sg.inject(h, g, stage.batch, batch_dim=0).backward()
        record["sg_norm"] = float(g.norm(dim=1).mean())
        stage.step_block(t, leaf, g)
        target = torch.empty_like(g)
        pending.append((t, h.detach(), cond, target, dist.irecv(target, stage.rank + 1)))
    if stage.rank > 0:  # M_{r-1}'s target for batch t
        up = leaf.grad * stage.batch if stage.last else bootstrap_target(leaf, stage.batch, stage.sg.opts.scale)
        stage.isend(up, stage.rank - 1)


def run_dni(stage: Stage, batches: Batches, steps: int, lag: int = 1) -> dict:
    """Update-unlocked training for `steps` batches; M_r learns batch t's target after `lag` more
    batches. Returns this rank's wall and CPU seconds."""
    pending: deque = deque()
    clock = _start()
    for t, (x, y) in zip(range(steps), batches):
        _dni_step(stage, t, x, y, pending)
        while len(pending) > lag:
            s, h, cond, target, work = pending.popleft()
            work.wait()
            _learn(stage, s, h, cond, target)
    for s, h, cond, target, work in pending:
        work.wait()
        _learn(stage, s, h, cond, target)
    stage.flush()
    return _stop(clock)


def _gpipe_step(stage: Stage, t: int, x: Tensor, y: Tensor, micro: int) -> None:
    xs, ys = x.chunk(micro), y.chunk(micro)
    leaves, outs = [], []
    for j in range(micro):  # forward: every micro-batch through the pipeline
        leaves.append(_input(stage, xs[j], xs[j].size(0)))
        outs.append(stage.block(leaves[-1]))
        if not stage.last:
            stage.isend(outs[-1], stage.rank + 1)
    total = 0.0
    for j in range(micro):  # backward: the true gradient of the whole batch's mean loss
        if stage.last:
            loss = stage.loss(outs[j], ys[j]) * (xs[j].size(0) / x.size(0))
            loss.backward()
            total += loss.item()
        else:
            outs[j].backward(stage.recv(xs[j].size(0), stage.widths[1], stage.rank + 1))
        if stage.rank > 0:
            stage.isend(leaves[j].grad, stage.rank - 1)
    stage.history.append({"step": t, **({"loss": total} if stage.last else {})})
    stage.step_block(t, x, None)


def run_gpipe(stage: Stage, batches: Batches, steps: int, micro: int = 4) -> dict:
    """Synchronous pipelined backpropagation for `steps` batches of `micro` micro-batches each (one rank:
    plain backpropagation). Returns this rank's wall and CPU seconds."""
    clock = _start()
    for t, (x, y) in zip(range(steps), batches):
        _gpipe_step(stage, t, x, y, micro if stage.world > 1 else 1)
    stage.flush()
    return _stop(clock)


def _start() -> tuple[float, float]:
    if dist.is_initialized():
        dist.barrier()  # every rank starts its clock together
    return time.perf_counter(), time.process_time()


def _stop(clock: tuple[float, float]) -> dict:
    if dist.is_initialized():
        dist.barrier()
    return {"wall_s": time.perf_counter() - clock[0], "cpu_s": time.process_time() - clock[1]}
