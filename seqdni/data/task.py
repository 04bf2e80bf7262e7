"""What a data module asks of the model: the task's inputs and outputs. The CLI links it from `data.task`."""

from __future__ import annotations

from dataclasses import dataclass, field

from seqdni.errors import UserError


@dataclass
class Task:
    """What a data module asks of the model; the CLI links it from `data.task`.

    Args:
        name: The task's name (`chars`, `copy`, `repeat-copy`, ...).
        symbols: Ordered vocabulary of a character task: inputs are ids, the loss is
            cross-entropy, the metric bits per character.
        input_size: Width of an input vector (bit tasks; 0 for character tasks).
        output_size: Bits predicted per step (bit tasks; 0 for character tasks). The target
            tensor then has `output_size + 2` channels: bits, loss mask, episode end. For a
            feed-forward bit task (binary addition) the target is just the `output_size` bits.
        classes: > 0: a feed-forward classification task (images): one label per example out of
            this many classes; `output_size` is then the same number.
        resets: Bit tasks of episodes: inputs carry one more channel after `input_size`, 1 on the
            first step of each episode, where the network sets the stream's state to zero.
    """

    name: str = "chars"
    symbols: list[str] = field(default_factory=list)
    input_size: int = 0
    output_size: int = 0
    classes: int = 0
    resets: bool = False

    @property
    def kind(self) -> str:
        return "chars" if self.symbols else "bits"

    def __post_init__(self) -> None:
        if not self.symbols and (self.input_size <= 0 or self.output_size <= 0):
            raise UserError(f"task {self.name!r} needs either symbols or positive input_size and output_size")
