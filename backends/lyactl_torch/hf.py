"""Architecture adapters for Hugging Face ``transformers`` models: GPT-2 and the Llama family.

:class:`HFGPT2Adapter` handles ``GPT2LMHeadModel``; :class:`HFLlamaAdapter` handles
``LlamaForCausalLM``, ``Qwen2ForCausalLM`` and ``MistralForCausalLM``. Both implement
:class:`lyactl_torch.groups.ArchitectureAdapter`, so :class:`TorchBackend` and
:class:`Lyactl` run on them unchanged (``adapters=hf_adapters()``).

Axes per block (original block ``b``, names ``blocks.{b}.attn.head`` / ``blocks.{b}.mlp.block``):

* GPT-2 heads: ``c_attn`` is a ``Conv1D`` whose weight is ``[in, out]`` (transposed with
  respect to ``nn.Linear``) with output columns ``[q | k | v]``: dimension 1 in 3 segments of
  ``head_dim`` per head; its bias likewise; ``c_proj.weight`` rows (dimension 0).
* Llama heads: one unit = one KV head with its ``rep = n_head / n_kv_head`` query heads
  (``repeat_kv`` maps query head ``i`` to KV head ``i // rep``): ``q_proj`` rows in blocks of
  ``rep * head_dim``, ``k_proj``/``v_proj`` rows of ``head_dim``, ``o_proj`` columns of
  ``rep * head_dim``; biases (Qwen2) alike.
* MLP neurons: GPT-2 ``c_fc`` columns and ``c_proj`` rows; Llama ``gate_proj``/``up_proj``
  rows and ``down_proj`` columns; cut in groups of ``block`` (64) neurons.

Removing a unit equals zeroing its weights (a zero head writes nothing through ``c_proj`` /
``o_proj``; ``gelu(0) = silu(0) * 0 = 0``), and removing a block equals zeroing it (a
pre-norm residual block with zero output projections is the identity): surgery is exact.
Residual-stream channels are NOT offered: LayerNorm and the standard RMSNorm normalise over
the current width, so removing channels changes every other channel's output.

After surgery the attributes HF's forward reads are updated (GPT-2: ``num_heads``,
``split_size``, ``Conv1D.nf``/``nx``; Llama: ``num_key_value_groups`` stays valid because
whole KV groups go; ``num_heads``/``num_key_value_heads``/``intermediate_size`` are set
where a version has them). After a block is removed or restored, ``layer_idx`` becomes the
block's position (caches index by it) and a non-uniform ``config.layer_types`` (Qwen2
sliding windows, read by position) is re-synchronised with the live layers.

Frozen prefix: a forward pre-hook on the first block detaches its input, so the frozen
blocks (no parameter requires grad) build no autograd graph (as ``torch.no_grad``).

Saving and exporting a pruned HF model: :mod:`.hf_checkpoint`; :func:`uniform_constraints`
keeps the result exportable (one width for every layer).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn

from lyactl.errors import UnsupportedModelError, bad_arg
from lyactl.control.groups import Constraint, Group, GroupKind

from .groups import ArchitectureAdapter, AxisSpec, ModelCost, ParamSlice

__all__ = ["HFGPT2Adapter", "HFLlamaAdapter", "adapter_of", "hf_adapters", "uniform_constraints"]


def _transformers() -> Any:
    """The one lazy import of ``transformers`` in this module."""
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(bad_arg("transformers", "installed (pip install 'lyactl[hf]')", None)) from exc
    return transformers


def _is_hf(model: nn.Module, names: tuple[str, ...]) -> bool:
    return any(c.__name__ in names and c.__module__.startswith("transformers.") for c in type(model).__mro__)


def _sl(name: str, p: nn.Parameter | None, dim: int, width: int = 1, segments: int = 1, mm: bool = False) -> list[ParamSlice]:
    return [] if p is None else [ParamSlice(name, p, dim, width, segments, mm)]


def _cut_graph(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Forward pre-hook: detach the hidden states entering the first block of a frozen prefix."""
    if not getattr(module, "lyactl_cut_graph", False):
        return None
    if args:
        return (args[0].detach(), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}


class _HFAdapter:
    """Shared parts: structure check, frozen prefix, cost. ``seq_len`` sets the attention
    FLOPs term (default: the config's maximum positions)."""

    names: tuple[str, ...] = ()

    def __init__(self, seq_len: int | None = None) -> None:
        self.seq_len = seq_len

    def supports(self, model: nn.Module) -> bool:
        return _is_hf(model, self.names)

    def expected(self, model: nn.Module) -> dict[int, tuple[str, type]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def check(self, model: nn.Module) -> None:
        """Raise :class:`UnsupportedModelError` naming the first module holding parameters
        that is not one this adapter slices (LoRA wrappers, quantised layers, extra norms)."""
        want = self.expected(model)
        for name, mod in model.named_modules():
            if not list(mod.parameters(recurse=False)):
                continue
            if id(mod) not in want:
                raise UnsupportedModelError(bad_arg(f"module {name!r}", "a module this adapter slices", type(mod).__name__))
            if type(mod).__name__ != want[id(mod)][1].__name__:
                raise UnsupportedModelError(bad_arg(f"module {name!r}", want[id(mod)][1].__name__, type(mod).__name__))

    def T(self, model: nn.Module) -> int:
        return int(self.seq_len or model.config.max_position_embeddings)

    def cost(self, model: nn.Module) -> ModelCost:
        mm = tuple(sum(m.weight.numel() for m in blk.modules() if type(m).__name__ in ("Linear", "Conv1D"))
                   for blk in self.blocks(model))
        attn = tuple(12.0 * self.T(model) * self.attn_width(blk) for blk in self.blocks(model))
        return ModelCost(mm, attn, model.lm_head.weight.numel())

    def set_frozen_prefix(self, model: nn.Module, p: int) -> None:
        """Run the first ``p`` (frozen) blocks without autograd. Called after every structural
        change, so it also renumbers ``layer_idx`` to the block's position (HF caches index
        their per-layer entries by it) and re-syncs per-layer config lists."""
        for pos, blk in enumerate(self.blocks(model)):
            if not hasattr(blk, "lyactl_cut_graph"):
                blk.register_forward_pre_hook(_cut_graph, with_kwargs=True)
            blk.lyactl_cut_graph = pos == 0 and p > 0
            for mod in blk.modules():
                if isinstance(getattr(mod, "layer_idx", None), int):
                    mod.layer_idx = pos
        self.sync_config(model)

    def sync_config(self, model: nn.Module) -> None:
        """Hook for per-layer config lists (nothing for GPT-2)."""

    def blocks(self, model: nn.Module) -> nn.ModuleList:  # pragma: no cover - overridden
        raise NotImplementedError

    def attn_width(self, blk: nn.Module) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


class HFGPT2Adapter(_HFAdapter):
    """Adapter for ``transformers.GPT2LMHeadModel`` (no cross-attention)."""

    names = ("GPT2LMHeadModel",)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.transformer.h

    def T(self, model: nn.Module) -> int:
        return int(self.seq_len or model.config.n_positions)

    def attn_width(self, blk: nn.Module) -> int:
        return blk.attn.c_attn.weight.shape[1] // 3

    def expected(self, model: nn.Module) -> dict[int, tuple[str, type]]:
        Conv1D = _transformers().pytorch_utils.Conv1D
        tr = model.transformer
        want = {id(tr.wte): ("wte", nn.Embedding), id(tr.wpe): ("wpe", nn.Embedding),
                id(tr.ln_f): ("ln_f", nn.LayerNorm), id(model.lm_head): ("lm_head", nn.Linear)}
        for blk in tr.h:
            want.update({id(blk.ln_1): ("ln_1", nn.LayerNorm), id(blk.ln_2): ("ln_2", nn.LayerNorm)})
            for m in (blk.attn.c_attn, blk.attn.c_proj, blk.mlp.c_fc, blk.mlp.c_proj):
                want[id(m)] = ("conv", Conv1D)
        return want

    def axes(self, model: nn.Module, block_ids: Sequence[int]) -> list[AxisSpec]:
        self.check(model)
        out, T = [], self.T(model)
        for b, blk in zip(block_ids, self.blocks(model)):
            a, m, p = blk.attn, blk.mlp, f"blocks.{b}"
            hd = a.head_dim
            head = (_sl(f"{p}.attn.c_attn.weight", a.c_attn.weight, 1, hd, 3, True)
                    + _sl(f"{p}.attn.c_attn.bias", a.c_attn.bias, 0, hd, 3)
                    + _sl(f"{p}.attn.c_proj.weight", a.c_proj.weight, 0, hd, 1, True))
            n_head = a.c_attn.weight.shape[1] // (3 * hd)
            out.append(AxisSpec(f"{p}.attn.head", GroupKind.HEAD, b, n_head, 1, tuple(head), 12.0 * T * hd,
                                _gpt2_attn_refresh(a), 1))
            mlp = (_sl(f"{p}.mlp.c_fc.weight", m.c_fc.weight, 1, mm=True) + _sl(f"{p}.mlp.c_fc.bias", m.c_fc.bias, 0)
                   + _sl(f"{p}.mlp.c_proj.weight", m.c_proj.weight, 0, mm=True))
            out.append(AxisSpec(f"{p}.mlp.block", GroupKind.MLP_BLOCK, b, m.c_fc.weight.shape[1], 0, tuple(mlp), 0.0,
                                _gpt2_mlp_refresh(m)))
        return out


def _gpt2_attn_refresh(a: nn.Module) -> Callable[[], None]:
    def refresh() -> None:
        a.num_heads = a.c_attn.weight.shape[1] // (3 * a.head_dim)
        a.split_size = a.num_heads * a.head_dim
        a.c_attn.nf, a.c_attn.nx = a.c_attn.weight.shape[1], a.c_attn.weight.shape[0]
        a.c_proj.nf, a.c_proj.nx = a.c_proj.weight.shape[1], a.c_proj.weight.shape[0]
    return refresh


def _gpt2_mlp_refresh(m: nn.Module) -> Callable[[], None]:
    def refresh() -> None:
        m.c_fc.nf, m.c_proj.nx = m.c_fc.weight.shape[1], m.c_proj.weight.shape[0]
    return refresh


class HFLlamaAdapter(_HFAdapter):
    """Adapter for ``LlamaForCausalLM``, ``Qwen2ForCausalLM`` and ``MistralForCausalLM``."""

    names = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.model.layers

    def attn_width(self, blk: nn.Module) -> int:
        return blk.self_attn.q_proj.weight.shape[0]

    def expected(self, model: nn.Module) -> dict[int, tuple[str, type]]:
        inner, norm_t = model.model, type(model.model.norm)
        if not norm_t.__name__.endswith("RMSNorm"):
            raise UnsupportedModelError(bad_arg("module 'model.norm'", "an RMSNorm", norm_t.__name__))
        want = {id(inner.embed_tokens): ("embed", nn.Embedding), id(inner.norm): ("norm", norm_t),
                id(model.lm_head): ("lm_head", nn.Linear)}
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            want.update({id(layer.input_layernorm): ("n1", norm_t), id(layer.post_attention_layernorm): ("n2", norm_t)})
            for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
                want[id(lin)] = ("linear", nn.Linear)
        return want

    def axes(self, model: nn.Module, block_ids: Sequence[int]) -> list[AxisSpec]:
        self.check(model)
        out, T = [], self.T(model)
        for b, layer in zip(block_ids, self.blocks(model)):
            a, m, p = layer.self_attn, layer.mlp, f"blocks.{b}"
            rep, hd = a.num_key_value_groups, a.head_dim
            head: list[ParamSlice] = []
            for nm, lin, w in (("q_proj", a.q_proj, rep * hd), ("k_proj", a.k_proj, hd), ("v_proj", a.v_proj, hd)):
                head += _sl(f"{p}.attn.{nm}.weight", lin.weight, 0, w, mm=True) + _sl(f"{p}.attn.{nm}.bias", lin.bias, 0, w)
            head += _sl(f"{p}.attn.o_proj.weight", a.o_proj.weight, 1, rep * hd, mm=True)
            out.append(AxisSpec(f"{p}.attn.head", GroupKind.HEAD, b, a.k_proj.weight.shape[0] // hd, 1, tuple(head),
                                12.0 * T * hd * rep, _llama_attn_refresh(a), rep))
            mlp: list[ParamSlice] = []
            for nm, lin in (("gate_proj", m.gate_proj), ("up_proj", m.up_proj)):
                mlp += _sl(f"{p}.mlp.{nm}.weight", lin.weight, 0, mm=True) + _sl(f"{p}.mlp.{nm}.bias", lin.bias, 0)
            mlp += _sl(f"{p}.mlp.down_proj.weight", m.down_proj.weight, 1, mm=True)
            out.append(AxisSpec(f"{p}.mlp.block", GroupKind.MLP_BLOCK, b, m.gate_proj.weight.shape[0], 0, tuple(mlp),
                                0.0, _llama_mlp_refresh(m)))
        return out

    def sync_config(self, model: nn.Module) -> None:
        """Qwen2 indexes ``config.layer_types`` by position: keep it matching the live layers
        (only when the types differ, so a uniform list is never touched)."""
        types = [getattr(layer.self_attn, "layer_type", None) for layer in self.blocks(model)]
        current = getattr(model.config, "layer_types", None)
        if None in types or current is None:
            return
        if not hasattr(model.model, "lyactl_layer_types"):
            model.model.lyactl_layer_types = list(current)  # the original list, for save_hf
        if len(set(types)) > 1 or len(set(current)) > 1:
            model.config.layer_types = types


def _llama_attn_refresh(a: nn.Module) -> Callable[[], None]:
    def refresh() -> None:
        n_kv = a.k_proj.weight.shape[0] // a.head_dim
        for attr, value in (("num_key_value_heads", n_kv), ("num_heads", n_kv * a.num_key_value_groups),
                            ("hidden_size", a.o_proj.weight.shape[0])):
            if hasattr(a, attr):
                setattr(a, attr, value)
    return refresh


def _llama_mlp_refresh(m: nn.Module) -> Callable[[], None]:
    def refresh() -> None:
        if hasattr(m, "intermediate_size"):
            m.intermediate_size = m.gate_proj.weight.shape[0]
    return refresh


def hf_adapters(seq_len: int | None = None) -> tuple[ArchitectureAdapter, ...]:
    """The HF adapters, for ``TorchBackend(..., adapters=hf_adapters())`` / ``Lyactl``."""
    return (HFGPT2Adapter(seq_len), HFLlamaAdapter(seq_len))


def adapter_of(model: nn.Module) -> _HFAdapter:
    """The HF adapter that supports ``model`` (UnsupportedModelError naming the families otherwise)."""
    for a in hf_adapters():
        if a.supports(model):
            return a
    raise UnsupportedModelError(bad_arg("model", "GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM or "
                                        "MistralForCausalLM", type(model).__name__))


def uniform_constraints(model: nn.Module, groups: Sequence[Group], *, heads: bool = True, mlp: bool = True,
                        layers: bool = True) -> tuple[Constraint, ...]:
    """Constraints under which every prune keeps a shape the model's standard config can
    express (so :func:`~.hf_checkpoint.export_pretrained` succeeds and
    ``AutoModelForCausalLM.from_pretrained`` loads the result without lyactl).

    Pass them with the backend's own: ``Controller(groups, [*backend.constraints(),
    *uniform_constraints(model, groups)], ...)``. Per kind (HEAD, MLP_BLOCK) the groups of
    one width (``Group.units``; a remainder block is its own class) form one ``uniform``
    constraint: a prune takes the same number from every block still present. A kind that is
    switched off, or that the config cannot express (GPT-2 heads: ``head_dim = n_embd //
    n_head``), gets ``min_keep = len(members)``: never pruned; so do whole layers with
    ``layers=False`` or GPT-2's ``scale_attn_by_inverse_layer_idx`` (renumbering changes it).
    ``max_groups_per_event`` must be at least the number of blocks for a uniform prune to fit.
    """
    gpt2 = isinstance(adapter_of(model), HFGPT2Adapter)
    allowed = {GroupKind.HEAD: heads and not gpt2, GroupKind.MLP_BLOCK: mlp,
               GroupKind.LAYER: layers and not (gpt2 and model.config.scale_attn_by_inverse_layer_idx)}
    out: list[Constraint] = []
    for kind, ok in allowed.items():
        members = [i for i, g in enumerate(groups) if g.kind is kind]
        if not members:
            continue
        if not ok:
            out.append(Constraint(tuple(members), min_keep=len(members)))
        elif kind is not GroupKind.LAYER:
            for units in sorted({groups[i].units for i in members}):
                out.append(Constraint(tuple(i for i in members if groups[i].units == units), uniform=True))
    return tuple(out)
