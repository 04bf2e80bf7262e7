"""Pure `nn.Module` networks behind one protocol (`protocol.py`); no training code here.

Importing them loads neither Lightning nor tokenizers: `seqdni.data` (whose package imports its data
modules) is named in annotations only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seqdni.nets.hier import HierLSTM
from seqdni.nets.lstm import LN2, BitLSTM, CharLSTM
from seqdni.nets.mlp import BlockMLP
from seqdni.nets.protocol import LanguageNetwork, Network, RecurrentNetwork
from seqdni.nets.sampling import check_generation, sample_ids, sample_next
from seqdni.nets.twonets import TwoNets

if TYPE_CHECKING:
    from seqdni.data.task import Task

__all__ = ["LN2", "BitLSTM", "BlockMLP", "CharLSTM", "HierLSTM", "LanguageNetwork", "Network", "RecurrentNetwork",
           "TwoNets", "build_network", "check_generation", "sample_ids", "sample_next"]


def build_network(task: Task, embed_dim: int, hidden_size: int, num_layers: int = 1,
                  dropout: float = 0.0, forget_bias: float | None = None,
                  init_range: float | None = 0.1) -> CharLSTM | BitLSTM:
    if task.kind == "chars":
        return CharLSTM(len(task.symbols), embed_dim, hidden_size, num_layers, dropout, forget_bias, init_range)
    return BitLSTM(task.input_size, task.output_size, embed_dim, hidden_size, num_layers, dropout, task.resets,
                   forget_bias, init_range)
