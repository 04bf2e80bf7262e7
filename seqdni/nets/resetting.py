"""A one-layer LSTM recurrence that zeroes chosen streams' state before chosen steps, with its
backward pass written out (`resetting_lstm`).

nn.LSTM's fused kernel cannot zero rows between its steps, and the same recurrence left to autograd
records a dozen nodes a step. Here the step loop runs once forward, keeping the gate activations,
and once backward in closed form, one matrix product a step each way, and the recurrent weights'
gradient as one product over all steps, Σ_t dz_tᵀ h_t (dz: the gradient at the gate pre-activations),
when they require it. `BitLSTM` uses it from `seqdni.nets.lstm.CLOSED_FORM_STEPS` steps on, and so
does any one-layer core whose weights are frozen (a pass for state gradients alone). On the
Copy core (256 units, batch 32, one CPU thread) a 60-step unroll's update runs 2.7× faster than under
autograd, while DNI's 2-5-step unrolls, whose cost is per-operation overhead elsewhere, gained nothing
(`scripts/bench_resetting.py`, `docs/bench/resetting-cpu.json`).
"""

from __future__ import annotations

import torch
from torch import Tensor


class _ResettingLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, h0: Tensor, c0: Tensor, keep: Tensor, w_hh: Tensor):
        batch, steps, four = pre.shape
        n = four // 4
        outs = pre.new_empty(batch, steps, n)
        acts = pre.new_empty(steps, batch, four)  # σ(i), σ(f), tanh(g), σ(o) per step
        h_in, c_in, tanh_c = (pre.new_empty(steps, batch, n) for _ in range(3))
        h, c, w_t = h0, c0, w_hh.t()
        for t in range(steps):
            h = torch.mul(h, keep[:, t], out=h_in[t])  # the state the step reads, after its reset
            c = torch.mul(c, keep[:, t], out=c_in[t])
            z = torch.addmm(pre[:, t], h, w_t)
            a = torch.sigmoid(z, out=acts[t])
            torch.tanh(z[:, 2 * n : 3 * n], out=a[:, 2 * n : 3 * n])
            c = torch.addcmul(a[:, n : 2 * n] * c, a[:, :n], a[:, 2 * n : 3 * n])
            h = a[:, 3 * n :] * torch.tanh(c, out=tanh_c[t])
            outs[:, t] = h
        ctx.save_for_backward(acts, h_in, c_in, tanh_c, keep, w_hh)
        return outs, h, c

    @staticmethod
    def backward(ctx, d_outs: Tensor, dh: Tensor, dc: Tensor):
        acts, h_in, c_in, tanh_c, keep, w_hh = ctx.saved_tensors
        steps, _, four = acts.shape
        n = four // 4
        dz = torch.empty_like(acts)  # the gradient at every step's gate pre-activations
        # the forward ran in the activations' dtype (bf16 under autocast, w_hh cast by addmm); a backward
        # outside autocast must cast w_hh likewise (a no-op when the dtypes agree, as in float32)
        w = w_hh.to(acts.dtype)
        for t in range(steps - 1, -1, -1):
            a, d, tc = acts[t], dz[t], tanh_c[t]
            i, f, g, o = a[:, :n], a[:, n : 2 * n], a[:, 2 * n : 3 * n], a[:, 3 * n :]
            dh = dh + d_outs[:, t]
            torch.mul(dh, tc, out=d[:, 3 * n :])
            dc = torch.addcmul(dc, dh * o, 1 - tc * tc)
            torch.mul(dc, g, out=d[:, :n])
            torch.mul(dc, c_in[t], out=d[:, n : 2 * n])
            torch.mul(dc, i, out=d[:, 2 * n : 3 * n])
            slope = a * (1 - a)  # σ' = σ(1 - σ); tanh' = 1 - tanh² for the cell input
            slope[:, 2 * n : 3 * n] = 1 - g * g
            d.mul_(slope)
            dh = torch.mm(d, w) * keep[:, t]
            dc = dc * f * keep[:, t]
        dw = torch.mm(dz.reshape(-1, four).t(), h_in.reshape(-1, n)) if ctx.needs_input_grad[4] else None
        return dz.transpose(0, 1), dh, dc, None, dw


def resetting_lstm(pre: Tensor, h0: Tensor, c0: Tensor, keep: Tensor, w_hh: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """nn.LSTM's one-layer recurrence (gates i, f, g, o) from the input products `pre` (B, T, 4H, both
    biases included) and the state (h0, c0) (B, H), each stream's state multiplied by `keep` (B, T, 1;
    0 zeroes it) before each step. Returns the outputs (B, T, H) and the last (h, c)."""
    return _ResettingLSTM.apply(pre, h0, c0, keep, w_hh)
