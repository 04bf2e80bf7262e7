"""Engines: how one update of a system is computed, in plain PyTorch (`base.py` has the protocol).

- `FlatEngine`: truncated BPTT, DNI and DNI + Aux on one recurrent network.
- `HierEngine`: the two-level character LM with an interface between the levels.
- `TwoTimescaleEngine`: networks A and B, with A's message to B cut, end to end, or DNI.
- `LayerEngine`: a feed-forward network cut into blocks: backprop, DNI and cDNI between the blocks.
- `pipeline`: the same blocks, one process each (torch.distributed): update-unlocked DNI, and
  the synchronous micro-batch pipeline of true gradients.
"""

from seqdni.engines.base import Carry, Engine, Kept, ParamGroup, Stepper, Steps, UnrollOut, window_diagnostics
from seqdni.engines.flat import DNIOptions, FlatEngine
from seqdni.engines.hier import HierCarry, HierEngine
from seqdni.engines.layers import LayerEngine, LayerOptions
from seqdni.engines.probe import probe
from seqdni.engines.twotimescale import MessageOptions, TwoTimescaleEngine

__all__ = ["Carry", "DNIOptions", "Engine", "FlatEngine", "HierCarry", "HierEngine", "Kept", "LayerEngine",
           "LayerOptions", "MessageOptions",
           "ParamGroup", "Stepper", "Steps", "TwoTimescaleEngine", "UnrollOut", "probe", "window_diagnostics"]
