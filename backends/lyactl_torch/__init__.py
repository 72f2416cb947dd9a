"""lyactl_torch: the PyTorch backend of lyactl.

Reference model (:mod:`.model`), group discovery through architecture adapters
(:mod:`.groups`), fused statistics (:mod:`.stats`), exact surgery with optimizer state
(:mod:`.surgery`), freezing (:mod:`.freeze`), the proximal penalty (:mod:`.penalty`),
FLOPs accounting (:mod:`.flops`), the :class:`TorchBackend` (:mod:`.backend`), the
plain-loop driver :class:`Lyactl` (:mod:`.loop`) and checkpoints (:mod:`.checkpoint`);
Hugging Face models (:mod:`.hf`), Trainer and Lightning callbacks (:mod:`.integrations`),
DistributedDataParallel (:mod:`.ddp`) and crash-safe run checkpoints (:mod:`.run_state`).
transformers and lightning are imported only when those integrations are used.

Importing this package imports no torch: each name is imported from its module on first use
(PEP 562), so the ``lyactl`` command line can load the backend's subcommands
(:mod:`.commands`) cheaply.
"""

from typing import TYPE_CHECKING

from lyactl._lazy import lazy_getattr

if TYPE_CHECKING:  # the lazily imported names, for type checkers and IDEs
    from lyactl_torch.backend import TorchBackend
    from lyactl_torch.checkpoint import Checkpoint, load, load_optimizer_state, save
    from lyactl_torch.flops import flops_per_token, model_flops_per_token, step_flops
    from lyactl_torch.freeze import freeze_layer, frozen_prefix, unfreeze_layer
    from lyactl_torch.groups import ArchitectureAdapter, AxisSpec, GroupRef, Layout, ModelCost, ParamSlice, adapter_for
    from lyactl_torch.gpt_adapter import GPTAdapter
    from lyactl_torch.ddp import DistributedLyactl, rebuild_ddp
    from lyactl_torch.hf import hf_adapters
    from lyactl_torch.integrations import LyactlCallback, LyactlLightningCallback
    from lyactl_torch.loop import Controller, ControllerOutput, Lyactl
    from lyactl_torch.model import GPT, BlockShape, GPTConfig
    from lyactl_torch.penalty import ProximalGroupLasso
    from lyactl_torch.stats import ReductionPlan
    from lyactl_torch.surgery import prune_units, remove_layer, restore_layer, restore_units

_LAZY = {
    "backend": ("TorchBackend",),
    "checkpoint": ("Checkpoint", "load", "load_optimizer_state", "save",),
    "flops": ("flops_per_token", "model_flops_per_token", "step_flops",),
    "freeze": ("freeze_layer", "frozen_prefix", "unfreeze_layer",),
    "groups": ("ArchitectureAdapter", "AxisSpec", "GroupRef", "Layout", "ModelCost", "ParamSlice", "adapter_for",),
    "gpt_adapter": ("GPTAdapter",),
    "ddp": ("DistributedLyactl", "rebuild_ddp",),
    "hf": ("hf_adapters",),
    "integrations": ("LyactlCallback", "LyactlLightningCallback",),
    "loop": ("Controller", "ControllerOutput", "Lyactl",),
    "model": ("GPT", "BlockShape", "GPTConfig",),
    "penalty": ("ProximalGroupLasso",),
    "stats": ("ReductionPlan",),
    "surgery": ("prune_units", "remove_layer", "restore_layer", "restore_units",)
}


__getattr__ = lazy_getattr("lyactl_torch", _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
