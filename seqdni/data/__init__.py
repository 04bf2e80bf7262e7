"""Data: streams, text and PTB, the character vocabulary, Copy / Repeat Copy episodes, digit streams;
feed-forward examples: binary addition, the 8×8 digit images, MNIST.

Data modules say what their task is (`Task`, linked to the model by the CLI). Nothing here
imports anything else from seqdni.
"""

from seqdni.data.copy import CopyDataModule, RepeatCopyDataModule
from seqdni.data.digits import DIGITS, DigitStreams
from seqdni.data.examples import BinaryAddition, ExampleData, ShuffledBatches
from seqdni.data.images import MNIST, DigitImages
from seqdni.data.streams import ResumableBatches, StreamBatches
from seqdni.data.task import Task
from seqdni.data.text import CharDataModule
from seqdni.data.vocab import CharVocab

__all__ = ["DIGITS", "MNIST", "BinaryAddition", "CharDataModule", "CharVocab", "CopyDataModule", "DigitImages",
           "DigitStreams", "ExampleData", "RepeatCopyDataModule", "ResumableBatches", "ShuffledBatches",
           "StreamBatches", "Task"]
