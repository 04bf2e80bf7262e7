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
the update equals backpropagation's on the whole batch. A batch of B examples makes exactly
`micro` micro-batches (1 <= micro <= B) of consecutive examples, B // micro or B // micro + 1 each.

Per-step values (losses, M's loss and cosine, the synthetic gradient's norm) stay on the device
while training and are read back once, at the end of the run: a read-back per step would make the
host wait for the device every step, which is the locking that update unlocking removes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
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
        record: Steps at which to keep the block's weights, input (the whole batch's), synthetic
            gradient and parameter gradients (what a test checks an update against).
        history: One dict per step; numbers once the run has ended (tensors while it runs).
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

    def step_block(self, t: int, inputs: Sequence[Tensor], g: Tensor | None) -> None:
        """Step the block on the gradients it holds; `inputs`: what it was run on (its micro-batches)."""
        if t in self.record:
            self.trace[t] = {"input": torch.cat([x.detach() for x in inputs]), "sg": None if g is None else g.clone(),
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
    stage.history[t].update(sg_loss=sg_loss.detach(), sg_cosine=cosine(prediction, target))


def _dni_step(stage: Stage, t: int, x: Tensor, y: Tensor, pending: deque) -> None:
    leaf = _input(stage, x, stage.batch)
    h = stage.block(leaf)
    record = {"step": t}
    stage.history.append(record)
    if stage.last:
        loss = stage.loss(h, y)
        loss.backward()
        record["loss"] = loss.detach()
        stage.step_block(t, [leaf], None)
    else:
        stage.isend(h, stage.rank + 1)
        cond = stage.condition(y) if stage.condition is not None else None
        g = stage.sg.predict(h, cond, batch_dim=0)
        stage.sg.inject(h, g, stage.batch, batch_dim=0).backward()
        record["sg_norm"] = g.norm(dim=1).mean()
        stage.step_block(t, [leaf], g)
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
    _settle(stage.history)
    return _stop(clock)


def _gpipe_step(stage: Stage, t: int, x: Tensor, y: Tensor, micro: int) -> None:
    if not 1 <= micro <= x.size(0):
        raise ValueError(f"a batch of {x.size(0)} examples cannot make {micro} micro-batches")
    xs, ys = x.tensor_split(micro), y.tensor_split(micro)  # exactly `micro`, every rank alike
    leaves, outs = [], []
    for xj in xs:  # forward: every micro-batch through the pipeline
        leaves.append(_input(stage, xj, xj.size(0)))
        outs.append(stage.block(leaves[-1]))
        if not stage.last:
            stage.isend(outs[-1], stage.rank + 1)
    losses = []
    for xj, yj, leaf, out in zip(xs, ys, leaves, outs):  # backward: the true gradient of the batch's mean loss
        if stage.last:
            loss = stage.loss(out, yj) * (xj.size(0) / x.size(0))
            loss.backward()
            losses.append(loss.detach())
        else:
            out.backward(stage.recv(xj.size(0), stage.widths[1], stage.rank + 1))
        if stage.rank > 0:
            stage.isend(leaf.grad, stage.rank - 1)
    # the micro-batches' losses, summed when read back (`_settle`)
    stage.history.append({"step": t, **({"loss": torch.stack(losses)} if stage.last else {})})
    stage.step_block(t, leaves, None)


def run_gpipe(stage: Stage, batches: Batches, steps: int, micro: int = 4) -> dict:
    """Synchronous pipelined backpropagation for `steps` batches of `micro` micro-batches each (one rank:
    plain backpropagation). Returns this rank's wall and CPU seconds."""
    clock = _start()
    for t, (x, y) in zip(range(steps), batches):
        _gpipe_step(stage, t, x, y, micro if stage.world > 1 else 1)
    stage.flush()
    _settle(stage.history)
    return _stop(clock)


def _settle(history: list[dict]) -> None:
    """Every tensor in `history` as a Python float, read back from the device in one transfer (before
    the clock stops: it waits for the device's work). A tensor of several values, the micro-batches'
    losses, becomes their sum, added in order."""
    slots = [(h, k, v.dim(), v.numel()) for h in history for k, v in h.items() if isinstance(v, Tensor)]
    if not slots:
        return
    values = iter(torch.cat([h[k].detach().reshape(-1) for h, k, _, _ in slots]).tolist())
    for h, k, dim, n in slots:
        if dim == 0:
            h[k] = next(values)
        else:
            h[k] = 0.0
            for _ in range(n):
                h[k] += next(values)


def _start() -> tuple[float, float]:
    if dist.is_initialized():
        dist.barrier()  # every rank starts its clock together
    return time.perf_counter(), time.process_time()


def _stop(clock: tuple[float, float]) -> dict:
    if dist.is_initialized():
        dist.barrier()
    return {"wall_s": time.perf_counter() - clock[0], "cpu_s": time.process_time() - clock[1]}
