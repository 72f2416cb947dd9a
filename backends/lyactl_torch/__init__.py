"""lyactl_torch: the PyTorch backend of lyactl.

Reference model (:mod:`.model`), group discovery through architecture adapters
(:mod:`.groups`), fused statistics (:mod:`.stats`), exact surgery with optimizer state
(:mod:`.surgery`), freezing (:mod:`.freeze`), the proximal penalty (:mod:`.penalty`),
FLOPs accounting (:mod:`.flops`), the :class:`TorchBackend` (:mod:`.backend`), the
plain-loop driver :class:`Lyactl` (:mod:`.loop`) and checkpoints (:mod:`.checkpoint`).
"""

from .backend import TorchBackend
from .checkpoint import Checkpoint, load, load_optimizer_state, save
from .flops import flops_per_token, model_flops_per_token, step_flops
from .freeze import freeze_layer, frozen_prefix, unfreeze_layer
from .groups import ArchitectureAdapter, AxisSpec, GPTAdapter, GroupRef, Layout, ModelCost, ParamSlice, adapter_for
from .loop import Controller, ControllerOutput, Lyactl
from .model import GPT, BlockShape, GPTConfig
from .penalty import ProximalGroupLasso
from .stats import ReductionPlan
from .surgery import prune_units, remove_layer, restore_layer, restore_units

__all__ = [
    "ArchitectureAdapter",
    "AxisSpec",
    "BlockShape",
    "Checkpoint",
    "Controller",
    "ControllerOutput",
    "GPT",
    "GPTAdapter",
    "GPTConfig",
    "GroupRef",
    "Layout",
    "Lyactl",
    "ModelCost",
    "ParamSlice",
    "ProximalGroupLasso",
    "ReductionPlan",
    "TorchBackend",
    "adapter_for",
    "flops_per_token",
    "freeze_layer",
    "frozen_prefix",
    "load",
    "load_optimizer_state",
    "model_flops_per_token",
    "prune_units",
    "remove_layer",
    "restore_layer",
    "restore_units",
    "save",
    "step_flops",
    "unfreeze_layer",
]
