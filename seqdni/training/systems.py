"""Systems: typed constructors of (network, engine) pairs for the one training module.

Each class's `__init__` arguments are the `model.init_args` keys of a config and the `--help`
text; it checks them, builds the network (`seqdni.nets`) and the engine (`seqdni.engines`)
and hands both to `SeqModule.build`. Nothing else is overridden but a data check.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Literal

from seqdni.data import Task
from seqdni.dni import BoundaryOptions
from seqdni.engines import DNIOptions, FlatEngine, HierEngine, MessageOptions, TwoTimescaleEngine
from seqdni.engines.hier import Message
from seqdni.engines.twotimescale import Regime
from seqdni.errors import UserError
from seqdni.nets import HierLSTM, TwoNets, build_network
from seqdni.training.checks import check_values
from seqdni.training.module import SeqModule
from seqdni.training.probe import Probe

# What checkpoints of earlier versions stored for options a system did not use.
LEGACY_DEFAULTS = {"scale_target": True, "conditional": False, "train_core": False, "aux_weight": 0.0}


def as_task(task: Task | dict) -> Task:
    return Task(**task) if isinstance(task, dict) else task


def as_options(cls: type, value, owner: str):
    """`value` (a dataclass, or a dict from a checkpoint's hyperparameters) as `cls`. A field that
    `cls` lacks may only hold its default (checkpoints of earlier versions stored every field)."""
    if value is None or type(value) is cls:
        return value
    given = value if isinstance(value, dict) else asdict(value)
    known = {f.name for f in fields(cls)}
    defaults = {f.name: f.default for f in fields(DNIOptions) + fields(MessageOptions)}
    for key, v in given.items():
        if key not in known and v != defaults.get(key, object()) and v != LEGACY_DEFAULTS.get(key, object()):
            raise UserError(f"model.dni.{key} is not supported by {owner}; remove it")
    return cls(**{k: v for k, v in given.items() if k in known})


def check_init_range(init_range: float | None) -> None:
    if init_range is not None and not init_range > 0:
        raise UserError(f"model.init_range must be positive, or null for PyTorch's default initialisation; "
                        f"got {init_range}")


class SeqModel(SeqModule):
    """An LSTM sequence model trained with truncated BPTT, optionally with DNI (`FlatEngine`).

    Args:
        task: Inputs, outputs and loss; linked from the data module (`data.task`).
        window: Columns per training batch; linked from `data.window`.
        unroll: Truncation length T: steps per unroll, one optimiser step per unroll.
        embed_dim: Input embedding size (characters) or input projection size (vectors).
        hidden_size: LSTM units per layer.
        num_layers: LSTM layers.
        dropout: Dropout on the LSTM output (and between layers).
        lr: Adam learning rate of the network.
        weight_decay: Adam weight decay of the network.
        clip: Gradient-norm clip of the network (its own gradients only); 0 disables.
        lr_schedule: `constant`, or `cosine` decay to 0 over `trainer.max_steps` optimiser steps.
        warmup_steps: Linear warm-up steps of the learning rate.
        dni: Synthetic gradients at truncation boundaries; unset for plain truncated BPTT.
        probe_every: Run the true-gradient probe every this many optimiser steps (0: never).
        probe_unrolls: Unrolls of true BPTT behind the probe's boundary.
        probe_rows: Streams in the probe batch.
        forget_bias: Initial bias of the LSTM's forget gates (unset: nn.LSTM's uniform
            initialisation, about 0); 1.0 makes a fresh cell keep 73% of its state per step.
        init_range: The embedding table's and the output layer's weights start uniform in
            (-init_range, init_range), the output bias at 0 (PyTorch's word-language-model
            example); unset: PyTorch's default initialisation of both.
    """

    def __init__(self, task: Task, window: int = 120, unroll: int = 8, embed_dim: int = 128, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, lr: float = 2e-3, weight_decay: float = 0.0,
                 clip: float = 1.0, lr_schedule: Literal["constant", "cosine"] = "constant", warmup_steps: int = 0,
                 dni: DNIOptions | None = None, probe_every: int = 0, probe_unrolls: int = 8, probe_rows: int = 16,
                 forget_bias: float | None = None, init_range: float | None = 0.1):
        super().__init__()
        if unroll <= 0:
            raise UserError(f"model.unroll must be a positive number of steps, got {unroll}")
        if window % unroll:
            raise UserError(f"data.window ({window}) must be a multiple of model.unroll ({unroll})")
        probing = dict(probe_unrolls=probe_unrolls, probe_rows=probe_rows) if probe_every else {}
        check_values(dict(embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers, **probing),
                     dict(lr=lr, weight_decay=weight_decay, clip=clip, warmup_steps=warmup_steps,
                          probe_every=probe_every), dropout)
        task, dni = as_task(task), as_options(DNIOptions, dni, "SeqModel")
        self.save_hyperparameters()
        self.hparams.update(task=asdict(task), dni=None if dni is None else asdict(dni))  # weights-only loadable
        self.dni = dni
        check_init_range(init_range)
        net = build_network(task, embed_dim, hidden_size, num_layers, dropout, forget_bias, init_range)
        self.build(task, FlatEngine(net, unroll, dni, lr, weight_decay, clip), lr_schedule, warmup_steps)
        if dni is not None and probe_every:
            self.probe = Probe(probe_every, probe_unrolls, probe_rows, window)


class HierLM(SeqModule):
    """The hierarchical character LM (`seqdni.nets.HierLSTM`, trained by `HierEngine`).

    `trainer.max_steps` counts lower-core updates (one per `unroll` characters), as for the flat
    model. There is no true-gradient probe.

    Args:
        task: The vocabulary; linked from the data module (`data.task`).
        window: Columns per training batch; linked from `data.window`. A multiple of the upper
            unroll (`upper_unroll` · `tick` characters), so no period spans two batches.
        unroll: Truncation length of the lower core, in characters: one update per unroll.
        embed_dim: Character embedding size.
        hidden_size: LSTM units per lower layer.
        num_layers: Lower LSTM layers.
        dropout: Dropout on the features the prediction reads (and between lower layers).
        lr: Adam learning rate of both levels.
        weight_decay: Adam weight decay of both levels.
        clip: Gradient-norm clip of the cores (both levels together); 0 disables.
        lr_schedule: `constant`, or `cosine` decay to 0 over `trainer.max_steps`.
        warmup_steps: Linear warm-up steps of the learning rate.
        tick: Characters per tick of the upper core (k); `unroll` must be a multiple of it.
        upper_hidden: LSTM units of the upper core.
        message_size: Width of the lower core's message to the upper core.
        upper_unroll: Truncation length of the upper core, in ticks: it updates once per
            `upper_unroll` · `tick` characters, a multiple of `unroll`.
        message: The lower→upper interface: `bptt` (end to end; needs `upper_unroll` · `tick` =
            `unroll`), `cut` (no gradient to the lower core) or `dni` (a synthetic gradient).
        boundaries: Also put a synthetic gradient at each level's truncation boundary.
        dni: Synthetic-gradient settings of every interface (hidden width, scale, lr, clip;
            `discount` for the boundaries); set when `message` is `dni` or `boundaries` is true,
            otherwise unset.
        init_range: The embedding table's and the output layer's weights start uniform in
            (-init_range, init_range), the output bias at 0; unset: PyTorch's default.
    """

    def __init__(self, task: Task, window: int = 128, unroll: int = 8, embed_dim: int = 128, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.0, lr: float = 2e-3, weight_decay: float = 0.0,
                 clip: float = 1.0, lr_schedule: Literal["constant", "cosine"] = "constant", warmup_steps: int = 0,
                 tick: int = 4, upper_hidden: int = 256, message_size: int = 64, upper_unroll: int = 8,
                 message: Message = "dni", boundaries: bool = False, dni: BoundaryOptions | None = None,
                 init_range: float | None = 0.1):
        super().__init__()
        task, dni = as_task(task), as_options(BoundaryOptions, dni, "HierLM")
        if message not in ("bptt", "cut", "dni"):
            raise UserError(f"model.message must be bptt, cut or dni, got {message!r}")
        _check_hier(task, window, unroll, tick, upper_unroll, message, boundaries, dni)
        check_values(dict(embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers,
                          upper_hidden=upper_hidden, message_size=message_size),
                     dict(lr=lr, weight_decay=weight_decay, clip=clip, warmup_steps=warmup_steps), dropout)
        self.save_hyperparameters()
        self.hparams.update(task=asdict(task), dni=None if dni is None else asdict(dni))
        self.dni = dni
        check_init_range(init_range)
        net = HierLSTM(len(task.symbols), embed_dim, hidden_size, num_layers, dropout, tick, upper_hidden,
                       message_size, init_range)
        engine = HierEngine(net, unroll, upper_unroll, message, dni, boundaries, lr, weight_decay, clip)
        self.build(task, engine, lr_schedule, warmup_steps)


def _check_hier(task: Task, window: int, unroll: int, tick: int, upper_unroll: int, message: str, boundaries: bool,
                dni: BoundaryOptions | None) -> None:
    """HierLM's arguments, each error naming the key to change."""
    if task.kind != "chars":
        raise UserError(f"HierLM is a character language model; the {task.name!r} task has no vocabulary")
    if tick <= 0 or upper_unroll <= 0 or unroll <= 0:
        raise UserError(f"model.tick ({tick}), model.upper_unroll ({upper_unroll}) and model.unroll ({unroll}) "
                         "must be positive")
    if unroll % tick:
        raise UserError(f"model.unroll ({unroll}) must be a multiple of model.tick ({tick})")
    period = upper_unroll * tick
    if period % unroll:
        raise UserError(f"the upper unroll, model.upper_unroll × model.tick = {period} characters, must be a "
                         f"multiple of model.unroll ({unroll})")
    if message == "bptt" and period != unroll:
        raise UserError(f"with model.message bptt the levels are unrolled together: set model.upper_unroll to "
                         f"model.unroll / model.tick = {unroll // tick} (got {upper_unroll})")
    if window % period:
        raise UserError(f"data.window ({window}) must be a multiple of the upper unroll, model.upper_unroll × "
                         f"model.tick = {period} characters")
    if (message == "dni" or boundaries) != (dni is not None):
        raise UserError("model.dni must be set when model.message is dni or model.boundaries is true, and unset "
                         f"(null) otherwise; got message {message!r}, boundaries {boundaries}, "
                         f"dni {'set' if dni is not None else 'unset'}")


class TwoTimescale(SeqModule):
    """Networks A and B of the two-timescale system (`TwoTimescaleEngine`), in one of three regimes.

    `trainer.max_steps` counts B's updates (one per T² steps of every stream) in every regime, so
    the same `max_steps` means the same data.

    Args:
        task: The digit-stream task; linked from the data module (`data.task`).
        window: Steps per training batch; linked from `data.window`.
        period: T; must equal `data.period`.
        regime: `bptt` (end to end, one update per T² steps), `cut` (decoupled, A gets no
            gradient from B) or `dni` (decoupled, a synthetic gradient on A's message).
        embed_dim: Digit embedding size of A.
        hidden_a: LSTM units of A.
        hidden_b: LSTM units of B.
        message_size: Width of A's message to B.
        lr: Adam learning rate of A and of B (each has its own optimiser).
        clip: Gradient-norm clip of A and of B, each on its own gradients; 0 disables.
        dni: The message's synthetic-gradient model; set for regime `dni` only. With
            `conditional: true` M also reads the digit frequencies of the segment A has just read.
    """

    def __init__(self, task: Task, window: int = 64, period: int = 4, regime: Regime = "dni", embed_dim: int = 16,
                 hidden_a: int = 64, hidden_b: int = 64, message_size: int = 16, lr: float = 1e-3, clip: float = 5.0,
                 dni: MessageOptions | None = None):
        super().__init__()
        task, dni = as_task(task), as_options(MessageOptions, dni, "TwoTimescale")
        if regime not in ("bptt", "cut", "dni"):
            raise UserError(f"model.regime must be bptt, cut or dni, got {regime!r}")
        if task.name != "two-timescale":
            raise UserError(f"TwoTimescale trains the two-timescale digit task, not {task.name!r}; "
                             "use data.class_path seqdni.data.DigitStreams")
        if (dni is not None) != (regime == "dni"):
            raise UserError("model.dni must be set for regime dni and unset (null) for bptt and cut; "
                             f"got regime {regime!r} with dni {'set' if dni is not None else 'unset'}")
        check_values(dict(embed_dim=embed_dim, hidden_a=hidden_a, hidden_b=hidden_b, message_size=message_size),
                     dict(lr=lr, clip=clip))
        if period < 2 or window % (period * period):
            raise UserError(f"data.window ({window}) must be a multiple of T² with T = model.period ({period}) >= 2")
        self.save_hyperparameters()
        self.hparams.update(task=asdict(task), dni=None if dni is None else asdict(dni))
        self.period, self.regime, self.dni = period, regime, dni
        engine = TwoTimescaleEngine(TwoNets(period, embed_dim, hidden_a, hidden_b, message_size), regime, dni, lr, clip)
        self.build(task, engine, lr_schedule=None, span_key="T² = model.period²")

    def setup(self, stage: str) -> None:
        data_period = getattr(self.trainer.datamodule, "period", self.period)
        if data_period != self.period:
            raise UserError(f"model.period ({self.period}) differs from data.period ({data_period}); "
                             "set both to the same T")


def system_options(class_path: str) -> tuple[type | None, str]:
    """The class of a system's `dni` options, and the system's name."""
    name = class_path.rpartition(".")[2]
    return {"SeqModel": DNIOptions, "HierLM": BoundaryOptions, "TwoTimescale": MessageOptions}.get(name), name
