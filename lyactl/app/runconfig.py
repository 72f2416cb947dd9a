"""The configuration of one training run (``lyactl train CONFIG.toml|yaml``, ``lyactl demo``).

Four sections, each a validated frozen dataclass::

    [model]       d_model, n_layer, n_head, head_dim, mlp_hidden, seq_len, vocab_size
    [data]        corpus, val_fraction, split_seed, batch_size, val_docs
    [training]    steps, lr, warmup, min_lr_frac, betas, weight_decay, grad_clip, device, bf16,
                  compile, compile_strategy, log_every, seed
    [controller]  enabled, interval, block, budget, budget_kind, budget_counts, u_max, warmup_frac, last_frac,
                  ramp_end_frac,
                  hysteresis, window, lag, max_groups_per_event, min_steps_between_events, cooldown_steps,
                  allow_prune, allow_freeze, guard_exact_events, model_flops
    [controller.guard]          window, pre_window, tol_rel, z   (lyactl.control.guard.GuardConfig)
    [[controller.user_monitors]] name, role, candidate, and one of decreases = alpha / below = bound

This is the one configuration path: :class:`TrainingSection` IS the training loop's config
(``lyactl_torch.train.TrainConfig`` is this class), the guard table loads the real
:class:`~lyactl.control.guard.GuardConfig`, and :func:`build_controller` is the one place a
:class:`~lyactl.control.controller.Controller` is made from a run config (the runner, the
benchmark harness and the fault-injection study call it).

A missing key takes its default; an unknown key, a value of the wrong type or out of range
raises :class:`~lyactl.errors.InvalidArgumentError` whose message names the key
(``"training.lr: expected a number > 0, found -1"``). TOML is read with :mod:`tomllib`
(Python >= 3.11), YAML with PyYAML, imported lazily in :func:`_yaml_load` only. Pure Python:
no torch here; :mod:`lyactl_torch.runner` turns a :class:`RunConfig` into a run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from lyactl.control.budget import BudgetCounts, BudgetKind
from lyactl.control.guard import GuardConfig
from lyactl.errors import DataFileError, InvalidArgumentError, bad_arg

if TYPE_CHECKING:
    import numpy as np

    from lyactl.control.controller import Controller, ControllerConfig
    from lyactl.control.groups import Constraint, Group
    from lyactl.control.protocol import FlopsModel
    from lyactl.control.scoring import Prior

__all__ = ["ModelSection", "DataSection", "TrainingSection", "ControllerSection", "RunConfig", "UserMonitorSpec",
           "build_controller", "run_config_from_dict", "load_run_config", "DEMO_CORPUS", "COMPILE_STRATEGIES"]

DEMO_CORPUS = "demo"
"""``data.corpus`` value naming the corpus shipped with lyactl_torch."""

Check = tuple[Callable[[Any], bool], str]


def _int(lo: int) -> Check:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo, f"an int >= {lo}")


def _num(lo: float, hi: float = math.inf, lo_open: bool = False) -> Check:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and v <= hi

    bracket = "(" if lo_open else "["
    return ok, f"a number in {bracket}{lo}, {hi}]" if math.isfinite(hi) else f"a number {'>' if lo_open else '>='} {lo}"


_BOOL: Check = (lambda v: isinstance(v, bool), "true or false")
_STR: Check = (lambda v: isinstance(v, str) and bool(v), "a non-empty string")


def _optional(check: Check) -> Check:
    return (lambda v: v is None or check[0](v), f"none or {check[1]}")


def _validate(section: str, obj: Any, checks: Mapping[str, Check]) -> None:
    for name, (ok, expected) in checks.items():
        value = getattr(obj, name)
        if not ok(value):
            raise InvalidArgumentError(bad_arg(f"{section}.{name}", expected, value))


@dataclass(frozen=True)
class ModelSection:
    """The reference GPT (:class:`lyactl_torch.GPTConfig`); ``vocab_size`` is that of the BPE
    tokenizer trained on the training split; ``head_dim`` None means ``d_model // n_head``."""

    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    head_dim: int | None = None
    mlp_hidden: int | None = None
    seq_len: int = 64
    vocab_size: int = 512

    def __post_init__(self) -> None:
        _validate("model", self, {"d_model": _int(1), "n_layer": _int(1), "n_head": _int(1),
                                  "head_dim": _optional(_int(1)), "mlp_hidden": _optional(_int(1)),
                                  "seq_len": _int(2), "vocab_size": _int(260)})


@dataclass(frozen=True)
class DataSection:
    """``corpus``: ``"demo"`` (the shipped corpus) or a folder of ``*.jsonl.xz``; documents
    are split by ``split_seed`` with ``val_fraction`` of each source's bytes held out;
    validation bits per byte are measured on the first ``val_docs`` held-out documents
    (None: all)."""

    corpus: str = DEMO_CORPUS
    val_fraction: float = 0.1
    split_seed: int = 0
    batch_size: int = 16
    val_docs: int | None = None

    def __post_init__(self) -> None:
        _validate("data", self, {"corpus": _STR, "val_fraction": (lambda v: _num(0, 0.5, True)[0](v) and v < 0.5,
                                                                   "a number in (0, 0.5)"),
                                 "split_seed": _int(0), "batch_size": _int(1), "val_docs": _optional(_int(1))})


COMPILE_STRATEGIES = ("whole", "per-block", "dynamic")
"""``training.compile_strategy`` values (``lyactl_torch.compile.CompileStrategy``): how
``compile = true`` compiles the model and what an event recompiles."""


@dataclass(frozen=True)
class TrainingSection:
    """Optimiser (AdamW, ``betas``) and schedule (linear warm-up, cosine to ``min_lr_frac``);
    the training loop's own config (``lyactl_torch.train.TrainConfig`` is this class)."""

    steps: int = 400
    lr: float = 3e-3
    warmup: int = 30
    min_lr_frac: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    device: str = "cpu"
    bf16: bool = False
    compile: bool = False
    compile_strategy: str = "whole"
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        _validate("training", self, {
            "steps": _int(1), "lr": _num(0, lo_open=True), "warmup": _int(0), "min_lr_frac": _num(0, 1),
            "betas": (lambda v: isinstance(v, tuple) and len(v) == 2 and all(_num(0, 1)[0](b) and b < 1 for b in v),
                      "two numbers in [0, 1)"),
            "weight_decay": _num(0), "grad_clip": _num(0), "device": _STR, "bf16": _BOOL, "compile": _BOOL,
            "compile_strategy": (lambda v: v in COMPILE_STRATEGIES, "one of " + ", ".join(COMPILE_STRATEGIES)),
            "log_every": _int(1), "seed": _int(0)})
        if self.warmup > self.steps:
            raise InvalidArgumentError(bad_arg("training.warmup", f"an int <= training.steps={self.steps}",
                                               self.warmup))


@dataclass(frozen=True)
class UserMonitorSpec:
    """A user's Lyapunov monitor from a config file: ``candidate`` is an expression in the
    statistics (``"w_sq + dw_sq / lr"``, read by :mod:`lyactl.expr`), ``role`` one of
    collapsed, converged, bounded, harmless, and the condition exactly one of ``decreases``
    (``V_{k+1} <= (1 - alpha) V_k``) or ``below`` (``V_last < bound``)."""

    name: str
    role: str
    candidate: str
    decreases: float | None = None
    below: float | None = None

    def __post_init__(self) -> None:
        _validate("controller.user_monitors", self, {
            "name": _STR, "candidate": _STR,
            "role": (lambda v: v in ("collapsed", "converged", "bounded", "harmless"),
                     "one of collapsed, converged, bounded, harmless"),
            "decreases": _optional(_num(0, 1, True)), "below": _optional(_num(0, lo_open=True))})
        if (self.decreases is None) == (self.below is None):
            raise InvalidArgumentError(bad_arg(f"controller.user_monitors[{self.name}]",
                                               "exactly one of decreases or below", "both or neither"))

    def monitor(self) -> Any:
        """The :class:`~lyactl.control.monitors.LyapunovMonitor` (imports sympy)."""
        from lyactl.control.monitors import Role
        from lyactl.control.user_monitors import Below, Decreases, user_monitor

        cond = Decreases(self.decreases) if self.decreases is not None else Below(self.below)
        return user_monitor(self.name, Role(self.role), self.candidate, cond)


@dataclass(frozen=True)
class ControllerSection:
    """The lyactl controller (:class:`lyactl.control.controller.ControllerConfig`); ``budget`` is the
    target training-FLOP saving (None: certificates only, no PI penalty); ``warmup_frac`` and
    ``last_frac`` place the decision window as fractions of ``training.steps``;
    ``last_freeze_frac`` (None: with the rest) lets freezes alone go on after ``last_frac``;
    ``ramp_end_frac`` (None: one cut) makes the budget gradual, a cubic ramp of the set-point
    from ``warmup_frac`` to it; ``budget_kind``: ``"average"`` (the run's average saving) or
    ``"final"`` (the saving at the end); ``budget_counts``: ``"training_flops"`` (every training
    FLOP saved, freezes included) or ``"pruned_only"`` (only what makes the model smaller to
    run; freezes never count towards the target) (:mod:`lyactl.control.budget`)."""

    enabled: bool = True
    interval: int = 10
    block: int = 32
    budget: float | None = 0.2
    budget_kind: str = "average"
    budget_counts: str = "training_flops"
    u_max: float = 3.0
    warmup_frac: float = 0.2
    last_frac: float = 0.8
    last_freeze_frac: float | None = None
    ramp_end_frac: float | None = None
    hysteresis: int = 2
    window: int = 8
    lag: int = 2
    max_groups_per_event: int = 64
    min_steps_between_events: int = 20
    cooldown_steps: int = 100
    allow_prune: bool = True
    allow_freeze: bool = True
    guard_exact_events: bool = False
    model_flops: float | None = None
    guard: GuardConfig = field(default_factory=GuardConfig)
    user_monitors: tuple[UserMonitorSpec, ...] = ()

    def __post_init__(self) -> None:
        _validate("controller", self, {
            "model_flops": (lambda v: v is None or _num(0, lo_open=True)[0](v), "none or a number > 0"),
            "enabled": _BOOL, "interval": _int(1), "block": _int(1),
            "budget": (lambda v: v is None or (_num(0, 1, True)[0](v) and v < 1), "none or a number in (0, 1)"),
            "budget_kind": (lambda v: isinstance(v, str) and v in {k.value for k in BudgetKind},
                            " or ".join(repr(k.value) for k in BudgetKind)),
            "budget_counts": (lambda v: isinstance(v, str) and v in {k.value for k in BudgetCounts},
                              " or ".join(repr(k.value) for k in BudgetCounts)),
            "u_max": _num(0), "warmup_frac": _num(0, 1), "last_frac": _num(0, 1),
            "ramp_end_frac": (lambda v: v is None or _num(0, 1)[0](v), "none or a number in [0, 1]"),
            "last_freeze_frac": (lambda v: v is None or _num(0, 1)[0](v), "none or a number in [0, 1]"),
            "hysteresis": _int(1),
            "window": _int(3), "lag": _int(1), "max_groups_per_event": _int(1),
            "min_steps_between_events": _int(0), "cooldown_steps": _int(0), "allow_prune": _BOOL,
            "allow_freeze": _BOOL, "guard_exact_events": _BOOL})
        if self.lag >= self.window:
            raise InvalidArgumentError(bad_arg("controller.lag", f"an int < controller.window={self.window}", self.lag))
        if self.last_frac < self.warmup_frac:
            raise InvalidArgumentError(bad_arg("controller.last_frac",
                                               f"a number >= controller.warmup_frac={self.warmup_frac}",
                                               self.last_frac))
        if self.ramp_end_frac is not None and not self.warmup_frac < self.ramp_end_frac <= self.last_frac:
            raise InvalidArgumentError(bad_arg("controller.ramp_end_frac",
                                               f"none or a number in (warmup_frac={self.warmup_frac}, "
                                               f"last_frac={self.last_frac}]", self.ramp_end_frac))

    def config(self, total_steps: int) -> ControllerConfig:
        """The :class:`~lyactl.control.controller.ControllerConfig` of a run of
        ``total_steps`` steps (fractions of the run become step numbers)."""
        from lyactl.control.budget import BudgetConfig
        from lyactl.control.controller import ControllerConfig
        from lyactl.control.monitors import MonitorConfig

        T, start = total_steps, int(self.warmup_frac * total_steps)
        ramp = {} if self.ramp_end_frac is None else {"ramp_start": start, "ramp_end": int(self.ramp_end_frac * T)}
        budget = None if self.budget is None else BudgetConfig(target=self.budget, total_steps=T, u_max=self.u_max,
                                                              kind=self.budget_kind, counts=self.budget_counts,
                                                              **ramp)
        return ControllerConfig(
            monitors=MonitorConfig(window=self.window, lag=self.lag), guard=self.guard, budget=budget,
            warmup_steps=start, last_decision_step=int(self.last_frac * T),
            last_freeze_step=None if self.last_freeze_frac is None else int(self.last_freeze_frac * T),
            hysteresis=self.hysteresis,
            max_groups_per_event=self.max_groups_per_event, min_steps_between_events=self.min_steps_between_events,
            cooldown_steps=self.cooldown_steps, model_flops=self.model_flops, allow_prune=self.allow_prune,
            allow_freeze=self.allow_freeze, guard_exact_events=self.guard_exact_events)


def build_controller(section: ControllerSection, total_steps: int, groups: Sequence[Group],
                     constraints: Sequence[Constraint] = (), flops_model: FlopsModel | None = None,
                     prior: Prior | np.ndarray | None = None, extra_monitors: Sequence[Any] = ()) -> Controller:
    """The controller of a run: ``section.config(total_steps)``, the built-in monitors plus
    the section's user monitors and ``extra_monitors`` (e.g.
    :func:`lyactl.control.settled.settled_monitor`), over the backend's groups (the one place a
    run's controller is made); ``prior``: the importance prior of the actuator and the
    completion (:mod:`lyactl.control.scoring`)."""
    from lyactl.control.controller import Controller
    from lyactl.control.monitors import default_monitors

    cfg = section.config(total_steps)
    monitors = (default_monitors(cfg.monitors) + tuple(spec.monitor() for spec in section.user_monitors)
                + tuple(extra_monitors))
    return Controller(groups, constraints, cfg, monitors=monitors, flops_model=flops_model, prior=prior)


@dataclass(frozen=True)
class RunConfig:
    """One run: model, data, training and controller sections."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    controller: ControllerSection = field(default_factory=ControllerSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (the inverse of :func:`run_config_from_dict`)."""
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {"model": ModelSection, "data": DataSection, "training": TrainingSection,
                              "controller": ControllerSection}  # the file's section names, not an extension point


def _section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise InvalidArgumentError(bad_arg(name, "a table of keys", raw))
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise InvalidArgumentError(bad_arg(f"{name}.{unknown[0]}", f"one of the keys {sorted(known)}", "an unknown key"))
    values = {}
    for key, value in raw.items():
        # TOML/YAML give ints where a float is meant ("lr = 1"): accept them as floats
        if known[key].type in ("float", "float | None") and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        values[key] = _nested(f"{name}.{key}", key, value)
    return cls(**values)


def _nested(name: str, key: str, value: Any) -> Any:
    """Tables and lists of a section loaded into their real dataclasses."""
    if key == "guard":
        return _section(name, GuardConfig, value)
    if key == "user_monitors":
        if not isinstance(value, (list, tuple)):
            raise InvalidArgumentError(bad_arg(name, "a list of tables", value))
        return tuple(_section(f"{name}[{i}]", UserMonitorSpec, v) for i, v in enumerate(value))
    if key == "betas" and isinstance(value, list):
        return tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value)
    return value


def run_config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from nested mappings; unknown sections or keys are errors."""
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(bad_arg("config", "a mapping of sections", type(data).__name__))
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise InvalidArgumentError(bad_arg(unknown[0], f"one of the sections {sorted(_SECTIONS)}", "an unknown section"))
    return RunConfig(**{name: _section(name, cls, data[name]) for name, cls in _SECTIONS.items() if name in data})


def _yaml_load(text: str, path: Path) -> Any:
    """PyYAML, imported here and only here."""
    try:
        import yaml
    except ImportError as exc:  # also when sys.modules["yaml"] is None
        raise DataFileError(f"{path}: reading YAML needs PyYAML: pip install pyyaml (or use TOML)") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataFileError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc


def load_run_config(path: str | Path) -> RunConfig:
    """Read a ``.toml``, ``.yaml`` or ``.yml`` file into a validated :class:`RunConfig`."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(bad_arg("config", "an existing .toml or .yaml file", str(path)))
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError as exc:  # Python 3.10
            raise DataFileError(f"{path}: reading TOML needs Python >= 3.11 (or use YAML)") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DataFileError(f"{path}: not valid TOML: {exc}") from exc
    elif path.suffix in (".yaml", ".yml"):
        data = _yaml_load(text, path)
    else:
        raise DataFileError(bad_arg("config", "a file ending in .toml, .yaml or .yml", str(path)))
    return run_config_from_dict({} if data is None else data)
