"""Group discovery of the PyTorch backend: partition, costs, constraints, adapters.

Also holds the test helpers shared by the other ``test_torch_*`` modules: a tiny model
factory and an *independent* per-group mask builder written from the GPT layout by hand
(not from the ParamSlice machinery), used as the reference for stats and surgery.
"""

import math

import pytest

torch = pytest.importorskip("torch")

from lyactl.errors import UnsupportedModelError  # noqa: E402
from lyactl.control.groups import GroupKind  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch.gpt_adapter import GPTAdapter  # noqa: E402
from lyactl_torch.groups import ArchitectureAdapter, Layout, adapter_for  # noqa: E402



def tiny(n_layer=2, n_head=4, n_kv_head=None, bias=False, tie=True, mlp_hidden=None, seed=0, d=128):
    torch.manual_seed(seed)
    cfg = L.GPTConfig(vocab_size=97, seq_len=32, d_model=d, n_layer=n_layer, n_head=n_head, head_dim=32,
                      n_kv_head=n_kv_head, bias=bias, tie_embeddings=tie, mlp_hidden=mlp_hidden)
    return L.GPT(cfg)


def reference_masks(model, layout):
    """``{group index: {param name: bool mask}}`` written by hand from the GPT layout
    (original shapes only: use on an unpruned model)."""
    cfg = model.config
    hd = cfg.head_dim
    out = {}
    named = dict(model.named_parameters(remove_duplicate=False))
    for gi, (g, ref) in enumerate(zip(layout.groups, layout.refs)):
        masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in named.items()}
        if g.kind is GroupKind.LAYER:
            for n in masks:
                if n.startswith(f"blocks.{g.layer}."):
                    masks[n][...] = True
        elif g.kind is GroupKind.HEAD:
            a = model.blocks[g.layer].attn
            rep = a.n_head // a.n_kv_head
            p = f"blocks.{g.layer}.attn"
            for u in ref.units:
                q = slice(u * rep * hd, (u + 1) * rep * hd)
                kv = slice(u * hd, (u + 1) * hd)
                masks[f"{p}.q.weight"][q] = True
                masks[f"{p}.k.weight"][kv] = True
                masks[f"{p}.v.weight"][kv] = True
                masks[f"{p}.o.weight"][:, q] = True
                if cfg.bias:
                    masks[f"{p}.q.bias"][q] = True
                    masks[f"{p}.k.bias"][kv] = True
                    masks[f"{p}.v.bias"][kv] = True
        elif g.kind is GroupKind.MLP_BLOCK:
            p = f"blocks.{g.layer}.mlp"
            u = list(ref.units)
            masks[f"{p}.fc.weight"][u] = True
            masks[f"{p}.proj.weight"][:, u] = True
            if cfg.bias:
                masks[f"{p}.fc.bias"][u] = True
        else:
            c = list(ref.units)
            for n in masks:
                leaf = n.split(".")[-2] if n.count(".") else n
                if n in ("wte.weight", "wpe.weight", "lm_head.weight") or leaf in ("q", "k", "v", "fc"):
                    if n.endswith("weight"):
                        masks[n][:, c] = True
                elif leaf in ("o", "proj", "ln1", "ln2", "ln_f"):
                    masks[n][c] = True
        out[gi] = masks
    return out


def zero_groups(model, masks):
    """Set the masked entries of every parameter to zero (the 'zeroed original')."""
    named = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for n, m in masks.items():
            named[n][m] = 0.0


@pytest.mark.parametrize("kw", [{}, {"n_kv_head": 2, "bias": True}, {"tie": False, "mlp_hidden": 200}])
def test_groups_partition_each_kind(kw):
    model = tiny(**kw)
    layout = Layout(model, GPTAdapter(), 64)
    masks = reference_masks(model, layout)
    named = dict(model.named_parameters())
    for kind in (GroupKind.HEAD, GroupKind.MLP_BLOCK, GroupKind.CHANNEL_BLOCK, GroupKind.LAYER):
        idx = [i for i, g in enumerate(layout.groups) if g.kind is kind]
        assert idx
        for n in named:
            count = sum(masks[i][n].int() for i in idx)
            assert int(count.max()) <= 1, (kind, n)
        for i in idx:
            n_ref = sum(int(masks[i][n].sum()) for n in named)
            assert layout.groups[i].n_params == n_ref, layout.groups[i].name


def test_names_stable_order_and_mlp_remainder():
    model = tiny(mlp_hidden=200)
    layout = Layout(model, GPTAdapter(), 64)
    names = [g.name for g in layout.groups]
    assert len(set(names)) == len(names)
    mlp = [g for g in layout.groups if g.kind is GroupKind.MLP_BLOCK and g.layer == 0]
    assert len(mlp) == 200 // 64 and all(g.units == 64 for g in mlp)
    con = next(c for c in layout.cons if set(c.members) == {layout.index[g.name] for g in mlp})
    assert con.min_keep == 0  # the remainder of 200 % 64 neurons always stays
    again = Layout(tiny(mlp_hidden=200, seed=3), GPTAdapter(), 64)
    assert [g.name for g in again.groups] == names


def test_constraints_cover_heads_mlp_layers_channels():
    model = tiny(n_layer=3, n_kv_head=2)
    layout = Layout(model, GPTAdapter(), 64)
    kinds = [{layout.groups[i].kind for i in c.members} for c in layout.cons]
    assert sum(k == {GroupKind.HEAD} for k in kinds) == 3
    assert sum(k == {GroupKind.MLP_BLOCK} for k in kinds) == 3
    assert sum(k == {GroupKind.LAYER} for k in kinds) == 1
    assert sum(k == {GroupKind.CHANNEL_BLOCK} for k in kinds) == 1
    assert all(c.min_keep == 1 for c in layout.cons)
    heads = [g for g in layout.groups if g.kind is GroupKind.HEAD]
    assert all(g.units == 2 for g in heads)  # 2 query heads per KV group


@pytest.mark.parametrize("kind", [GroupKind.HEAD, GroupKind.MLP_BLOCK, GroupKind.CHANNEL_BLOCK, GroupKind.LAYER])
def test_flops_remove_equals_measured_drop(kind):
    model = tiny(n_kv_head=2, tie=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    backend = L.TorchBackend(model, opt)
    gi = next(i for i, g in enumerate(backend.groups()) if g.kind is kind)
    before = L.model_flops_per_token(model)
    from lyactl.control.groups import Action, Decision, Event
    backend.apply(Event(0, 0, (Decision(0, backend.groups()[gi].name, gi, Action.PRUNE),)))
    after = L.model_flops_per_token(model)
    assert math.isclose(before - after, backend.groups()[gi].flops_remove, rel_tol=1e-12)


def test_unsupported_models_are_named():
    with pytest.raises(UnsupportedModelError, match="Sequential"):
        adapter_for(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    model = tiny()
    model.blocks[0].extra = torch.nn.Conv1d(2, 2, 1)
    with pytest.raises(UnsupportedModelError, match="blocks.0.extra"):
        Layout(model, GPTAdapter(), 64)


def test_custom_adapter_plugs_in_through_protocol():
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny()

    class WrappedAdapter:
        """Delegates to the GPT adapter on ``model.inner``."""

        def supports(self, model):
            return isinstance(model, Wrapped)

        def blocks(self, model):
            return model.inner.blocks

        def axes(self, model, block_ids):
            return GPTAdapter().axes(model.inner, block_ids)

        def cost(self, model):
            return GPTAdapter().cost(model.inner)

        def set_frozen_prefix(self, model, p):
            model.inner.frozen_prefix = p

    assert isinstance(WrappedAdapter(), ArchitectureAdapter)
    model = Wrapped()
    adapter = adapter_for(model, [WrappedAdapter()])
    layout = Layout(model, adapter, 64)
    assert [g.name for g in layout.groups] == [g.name for g in Layout(model.inner, GPTAdapter(), 64).groups]
