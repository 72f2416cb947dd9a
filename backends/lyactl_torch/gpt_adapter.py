"""The adapter of the reference GPT (:mod:`.model`): its blocks, prunable axes and costs.

Axes per block ``b``: ``blocks.{b}.attn.head`` (one unit = one KV head with its
``n_head / n_kv_head`` query heads: ``q``/``k``/``v`` rows, ``o`` columns), ``blocks.{b}.mlp.block``
(hidden neurons: ``fc`` rows, ``proj`` columns), and the model-wide ``channels`` axis (the
residual stream: embeddings, norms, every projection's input or output dimension).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from lyactl.control.groups import GroupKind
from lyactl.errors import UnsupportedModelError, bad_arg

from .groups import AxisSpec, ModelCost, ParamSlice
from .model import GPT, MLP, Attention, Block, RMSNorm

__all__ = ["GPTAdapter"]


def _lin(prefix: str, lin: nn.Linear, dim: int, width: int = 1, with_bias: bool = True) -> list[ParamSlice]:
    out = [ParamSlice(f"{prefix}.weight", lin.weight, dim, width, 1, True)]
    if with_bias and lin.bias is not None:
        out.append(ParamSlice(f"{prefix}.bias", lin.bias, 0, width))
    return out


class GPTAdapter:
    """Adapter for :class:`lyactl_torch.model.GPT`."""

    allowed = (GPT, Block, Attention, MLP, RMSNorm, nn.Linear, nn.Embedding, nn.ModuleList)

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, GPT)

    def check(self, model: nn.Module) -> None:
        """Raise :class:`UnsupportedModelError` naming the first module with parameters
        of a type this adapter does not know."""
        for name, mod in model.named_modules():
            own = list(mod.parameters(recurse=False))
            if own and type(mod) not in self.allowed:
                raise UnsupportedModelError(
                    bad_arg(f"module {name!r}", "GPT, Block, Attention, MLP, RMSNorm, Linear, Embedding", type(mod).__name__)
                )

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.blocks

    def axes(self, model: nn.Module, block_ids: Sequence[int]) -> list[AxisSpec]:
        self.check(model)
        cfg, out, T = model.config, [], model.config.seq_len
        chan: list[ParamSlice] = [ParamSlice("wte.weight", model.wte.weight, 1, matmul=cfg.tie_embeddings),
                                  ParamSlice("wpe.weight", model.wpe.weight, 1)]
        for b, blk in zip(block_ids, model.blocks):
            a, m, p = blk.attn, blk.mlp, f"blocks.{b}"
            rep, hd = a.n_head // a.n_kv_head, a.head_dim
            head = _lin(f"{p}.attn.q", a.q, 0, rep * hd) + _lin(f"{p}.attn.k", a.k, 0, hd)
            head += _lin(f"{p}.attn.v", a.v, 0, hd) + _lin(f"{p}.attn.o", a.o, 1, rep * hd, with_bias=False)
            out.append(AxisSpec(f"{p}.attn.head", GroupKind.HEAD, b, a.n_kv_head, 1, tuple(head),
                                12.0 * T * hd * rep, a.refresh, rep))
            mlp = _lin(f"{p}.mlp.fc", m.fc, 0) + _lin(f"{p}.mlp.proj", m.proj, 1, with_bias=False)
            out.append(AxisSpec(f"{p}.mlp.block", GroupKind.MLP_BLOCK, b, m.hidden, 0, tuple(mlp), 0.0, m.refresh))
            chan += [ParamSlice(f"{p}.ln1.weight", blk.ln1.weight, 0), ParamSlice(f"{p}.ln2.weight", blk.ln2.weight, 0)]
            for nm, lin in (("attn.q", a.q), ("attn.k", a.k), ("attn.v", a.v), ("mlp.fc", m.fc)):
                chan += _lin(f"{p}.{nm}", lin, 1, with_bias=False)
            chan += _lin(f"{p}.attn.o", a.o, 0) + _lin(f"{p}.mlp.proj", m.proj, 0)
        chan.append(ParamSlice("ln_f.weight", model.ln_f.weight, 0))
        if not cfg.tie_embeddings:
            chan.append(ParamSlice("lm_head.weight", model.lm_head.weight, 1, matmul=True))
        out.append(AxisSpec("channels", GroupKind.CHANNEL_BLOCK, -1, model.d_live, 0, tuple(chan)))
        return out

    def cost(self, model: nn.Module) -> ModelCost:
        T = model.config.seq_len
        mm = tuple(sum(mod.weight.numel() for mod in blk.modules() if isinstance(mod, nn.Linear)) for blk in model.blocks)
        attn = tuple(12.0 * T * blk.attn.head_dim * blk.attn.n_head for blk in model.blocks)
        return ModelCost(mm, attn, model.lm_head.weight.numel())

    def set_frozen_prefix(self, model: nn.Module, p: int) -> None:
        model.frozen_prefix = int(p)
