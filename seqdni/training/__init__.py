"""Training: the one LightningModule (`SeqModule`), the systems it trains, optimisers, callbacks."""

from seqdni.training.callbacks import Curriculum, LatestCheckpoint, SampleText
from seqdni.training.module import NonFiniteLossError, SeqModule
from seqdni.training.optim import LightningSteps, adam
from seqdni.training.systems import HierLM, SeqModel, TwoTimescale

__all__ = ["Curriculum", "HierLM", "LatestCheckpoint", "NonFiniteLossError", "SampleText", "SeqModel", "SeqModule",
           "LightningSteps", "TwoTimescale", "adam"]
