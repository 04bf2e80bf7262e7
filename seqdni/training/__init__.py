"""Training: the one LightningModule of sequence systems (`SeqModule`), the systems it trains, the
feed-forward `LayerModel`, optimisers, callbacks."""

from seqdni.training.callbacks import Curriculum, SampleText, TrainingClock
from seqdni.training.latest_checkpoint import LatestCheckpoint
from seqdni.training.layers import LayerModel
from seqdni.training.module import NonFiniteLossError, SeqModule
from seqdni.training.optim import LightningSteps, adam
from seqdni.training.systems import HierLM, SeqModel, TwoTimescale

__all__ = ["Curriculum", "HierLM", "LatestCheckpoint", "LayerModel", "NonFiniteLossError", "SampleText", "SeqModel",
           "SeqModule", "LightningSteps", "TrainingClock", "TwoTimescale", "adam"]
