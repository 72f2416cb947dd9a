"""lyactl_torch: the PyTorch backend of lyactl.

Reference model (:mod:`.model`), group discovery through architecture adapters
(:mod:`.groups`), fused statistics (:mod:`.stats`), exact surgery with optimizer state
(:mod:`.surgery`), freezing (:mod:`.freeze`), the proximal penalty (:mod:`.penalty`),
FLOPs accounting (:mod:`.flops`), the :class:`TorchBackend` (:mod:`.backend`), the
plain-loop driver :class:`Lyactl` (:mod:`.loop`) and checkpoints (:mod:`.checkpoint`);
Hugging Face models (:mod:`.hf`), Trainer and Lightning callbacks (:mod:`.integrations`),
DistributedDataParallel (:mod:`.ddp`) and crash-safe run checkpoints (:mod:`.run_state`).
transformers and lightning are imported only when those integrations are used.
"""

from .backend import TorchBackend
from .checkpoint import Checkpoint, load, load_optimizer_state, save
from .flops import flops_per_token, model_flops_per_token, step_flops
from .freeze import freeze_layer, frozen_prefix, unfreeze_layer
from .groups import ArchitectureAdapter, AxisSpec, GPTAdapter, GroupRef, Layout, ModelCost, ParamSlice, adapter_for
from .ddp import DistributedLyactl, rebuild_ddp
from .hf import hf_adapters
from .integrations import LyactlCallback, LyactlLightningCallback
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
    "DistributedLyactl",
    "GPT",
    "GPTAdapter",
    "GPTConfig",
    "GroupRef",
    "Layout",
    "Lyactl",
    "LyactlCallback",
    "LyactlLightningCallback",
    "ModelCost",
    "ParamSlice",
    "ProximalGroupLasso",
    "ReductionPlan",
    "TorchBackend",
    "adapter_for",
    "flops_per_token",
    "freeze_layer",
    "frozen_prefix",
    "hf_adapters",
    "load",
    "load_optimizer_state",
    "model_flops_per_token",
    "rebuild_ddp",
    "prune_units",
    "remove_layer",
    "restore_layer",
    "restore_units",
    "save",
    "step_flops",
    "unfreeze_layer",
]
