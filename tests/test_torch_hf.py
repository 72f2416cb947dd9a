"""HF adapters: group discovery, GQA ties, exact surgery (pruned == zeroed), optimizer state,
training continues, frozen prefix, save/load/export, unsupported modules, absent transformers."""

import copy
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
T.logging.set_verbosity_error()

from lyactl.errors import UnsupportedModelError  # noqa: E402
from lyactl.control.groups import Action, Decision, Event, GroupKind  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch import hf, hf_checkpoint  # noqa: E402

V, S, D, HD = 61, 16, 64, 16



def gpt2(n_layer=2, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = T.GPT2Config(vocab_size=V, n_positions=S, n_embd=D, n_layer=n_layer, n_head=D // HD, n_inner=128,
                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **kw)
    return T.GPT2LMHeadModel(cfg)


def llama_like(family="Qwen2", n_layer=2, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = getattr(T, f"{family}Config")(vocab_size=V, hidden_size=D, intermediate_size=128, num_hidden_layers=n_layer,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=HD,
                                        max_position_embeddings=S, bos_token_id=0, eos_token_id=0, pad_token_id=0, **kw)
    model = getattr(T, f"{family}ForCausalLM")(cfg)
    with torch.no_grad():  # HF zero-inits biases; random ones make the bias slicing observable
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    return model


FAMILIES = ["Llama", "Qwen2", "Mistral"]


def tokens(seed=0, B=2):
    return torch.randint(0, V, (B, S), generator=torch.Generator().manual_seed(seed))


def train(model, opt, n=2, seed=0):
    losses = []
    for i in range(n):
        opt.zero_grad()
        x = tokens(seed + i)
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def prune_event(b, names, eid=0, action=Action.PRUNE):
    idx = b.layout.index
    return Event(eid, b.step, tuple(Decision(b.step, n, idx[n], action) for n in names))


def logits(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x).logits
    model.train()
    return out


# ---- hand-written zeroing of the original layouts (independent of the adapters) -------
def zero_gpt2_head(model, layer, h):
    a = model.transformer.h[layer].attn
    for s in range(3):
        cols = slice(s * D + h * HD, s * D + (h + 1) * HD)
        a.c_attn.weight[:, cols] = 0
        a.c_attn.bias[cols] = 0
    a.c_proj.weight[h * HD:(h + 1) * HD] = 0


def zero_gpt2_mlp(model, layer, j):
    m, cols = model.transformer.h[layer].mlp, slice(64 * j, 64 * (j + 1))
    m.c_fc.weight[:, cols], m.c_fc.bias[cols], m.c_proj.weight[cols] = 0, 0, 0


def zero_kv_group(model, layer, g, rep=2):
    a = model.model.layers[layer].self_attn
    q, kv = slice(g * rep * HD, (g + 1) * rep * HD), slice(g * HD, (g + 1) * HD)
    for lin, rows in ((a.q_proj, q), (a.k_proj, kv), (a.v_proj, kv)):
        lin.weight[rows] = 0
        if lin.bias is not None:
            lin.bias[rows] = 0
    a.o_proj.weight[:, q] = 0


def zero_llama_mlp(model, layer, j):
    m, rows = model.model.layers[layer].mlp, slice(64 * j, 64 * (j + 1))
    m.gate_proj.weight[rows], m.up_proj.weight[rows], m.down_proj.weight[:, rows] = 0, 0, 0


def zero_block(block):
    for p in block.parameters():
        p.zero_()


# ---- discovery -------------------------------------------------------------------------
def test_gpt2_groups_and_no_channel_groups():
    model = gpt2()
    b = L.TorchBackend(model, torch.optim.AdamW(model.parameters()), adapters=hf.hf_adapters())
    kinds = [g.kind for g in b.groups()]
    assert GroupKind.CHANNEL_BLOCK not in kinds
    assert kinds.count(GroupKind.HEAD) == 2 * 4 and kinds.count(GroupKind.MLP_BLOCK) == 2 * 2
    assert kinds.count(GroupKind.LAYER) == 2
    head = b.groups()[b.layout.index["blocks.0.attn.head.2"]]
    assert head.units == 1 and head.n_params == 3 * D * HD + 3 * HD + HD * D
    layer = b.groups()[b.layout.index["blocks.1"]]
    assert layer.n_params == sum(p.numel() for p in model.transformer.h[1].parameters())
    assert all(c.min_keep == 1 for c in b.constraints())


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_family_gqa_groups(family):
    model = llama_like(family)
    b = L.TorchBackend(model, torch.optim.AdamW(model.parameters()), adapters=hf.hf_adapters())
    heads = [g for g in b.groups() if g.kind is GroupKind.HEAD]
    assert len(heads) == 2 * 2 and all(g.units == 2 for g in heads)  # one KV head with its 2 query heads
    bias = HD * 4 if family == "Qwen2" else 0  # q bias (2 heads) + k and v bias
    assert heads[0].n_params == 2 * HD * D + 2 * HD * D + 2 * HD * D + bias
    assert not any(g.kind is GroupKind.CHANNEL_BLOCK for g in b.groups())
    cost = b.adapter.cost(model)
    assert cost.block_matmul[0] == sum(m.weight.numel() for m in model.model.layers[0].modules() if isinstance(m, torch.nn.Linear))


# ---- exact surgery ---------------------------------------------------------------------
def _check_state_sliced(opt, param, before, keep_index, dim):
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt.state[param][key], before[key].index_select(dim, keep_index))


def test_gpt2_surgery_exact_state_sliced_training_continues():
    model = gpt2(n_layer=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = L.TorchBackend(model, opt, adapters=hf.hf_adapters())
    train(model, opt)
    ref = copy.deepcopy(model)
    w = model.transformer.h[0].attn.c_attn.weight
    st = {k: v.clone() for k, v in opt.state[w].items()}
    b.apply(prune_event(b, ["blocks.0.attn.head.1", "blocks.0.attn.head.3", "blocks.1.mlp.block.0", "blocks.2"]))
    with torch.no_grad():
        zero_gpt2_head(ref, 0, 1), zero_gpt2_head(ref, 0, 3), zero_gpt2_mlp(ref, 1, 0), zero_block(ref.transformer.h[2])
    x = tokens(9)
    torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=1e-5, atol=1e-5)
    keep = torch.tensor([s * D + h * HD + i for s in range(3) for h in (0, 2) for i in range(HD)])
    _check_state_sliced(opt, w, st, keep, 1)
    attn = model.transformer.h[0].attn
    assert attn.num_heads == 2 and attn.split_size == 2 * HD and attn.c_attn.nf == 6 * HD
    assert len(model.transformer.h) == 2 and model.transformer.h[1].mlp.c_fc.nf == 64
    losses = train(model, opt, n=3, seed=20)
    assert all(math.isfinite(v) for v in losses)
    stats = b.statistics()
    live = ~np.asarray(b.layout.pruned_mask())
    assert np.isfinite(stats.g_sq[live]).all() and np.isnan(stats.g_sq[~live]).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_llama_family_surgery_exact(family):
    model = llama_like(family, n_layer=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = L.TorchBackend(model, opt, adapters=hf.hf_adapters())
    train(model, opt)
    ref = copy.deepcopy(model)
    q = model.model.layers[1].self_attn.q_proj.weight
    st = {k: v.clone() for k, v in opt.state[q].items()}
    b.apply(prune_event(b, ["blocks.1.attn.head.0", "blocks.0.mlp.block.1", "blocks.2"]))
    with torch.no_grad():
        zero_kv_group(ref, 1, 0), zero_llama_mlp(ref, 0, 1), zero_block(ref.model.layers[2])
    x = tokens(5)
    torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=1e-5, atol=1e-5)
    _check_state_sliced(opt, q, st, torch.arange(2 * HD, 4 * HD), 0)
    a = model.model.layers[1].self_attn
    assert a.k_proj.weight.shape[0] == HD and a.q_proj.weight.shape[0] == 2 * HD and len(model.model.layers) == 2
    assert all(math.isfinite(v) for v in train(model, opt, n=3, seed=30))
    b.restore(prune_event(b, ["blocks.1.attn.head.0"], eid=0, action=Action.RESTORE))
    assert a.k_proj.weight.shape[0] == 2 * HD and len(model.model.layers) == 3


def test_qwen2_sliding_layer_types_follow_removed_layers():
    model = llama_like("Qwen2", n_layer=3, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    b = L.TorchBackend(model, opt, adapters=hf.hf_adapters())
    ref = copy.deepcopy(model)
    b.apply(prune_event(b, ["blocks.0"]))
    with torch.no_grad():
        zero_block(ref.model.layers[0])
    assert model.config.layer_types == ["sliding_attention", "sliding_attention"]
    x = tokens(3)
    torch.testing.assert_close(logits(model, x), logits(ref, x), rtol=1e-5, atol=1e-5)
    b.restore(prune_event(b, ["blocks.0"], action=Action.RESTORE))
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]


def test_frozen_prefix_builds_no_graph_and_keeps_outputs():
    model = gpt2(n_layer=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = L.TorchBackend(model, opt, adapters=hf.hf_adapters())
    x = tokens(1)
    before = logits(model, x)
    b.apply(prune_event(b, ["blocks.0"], action=Action.FREEZE))
    torch.testing.assert_close(logits(model, x), before)
    model(x, labels=x).loss.backward()
    assert model.transformer.wpe.weight.grad is None  # the prefix cut the graph below block 1
    assert model.transformer.h[1].attn.c_attn.weight.grad is not None
    assert all(p.grad is None for p in model.transformer.h[0].parameters())
    assert b.record[-1]["flops_per_token_after"] < b.record[-1]["flops_per_token_before"]


# ---- checkpoints -----------------------------------------------------------------------
@pytest.mark.parametrize("make", [gpt2, lambda **k: llama_like("Qwen2", **k)], ids=["gpt2", "qwen2"])
def test_save_load_per_layer_widths_round_trip(tmp_path, make):
    model = make(n_layer=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = L.TorchBackend(model, opt, adapters=hf.hf_adapters())
    train(model, opt)
    b.apply(prune_event(b, ["blocks.0.attn.head.1", "blocks.1.mlp.block.0", "blocks.2"]))
    b.apply(prune_event(b, ["blocks.0"], eid=1, action=Action.FREEZE))
    hf_checkpoint.save_hf(tmp_path / "ck.pt", model, live=b.layout.live, block_ids=b.layout.block_ids, optimizer=opt)
    ck = hf_checkpoint.load_hf(tmp_path / "ck.pt")
    x = tokens(4)
    torch.testing.assert_close(logits(ck.model, x), logits(model, x), rtol=0, atol=0)
    assert not any(p.requires_grad for p in hf.adapter_of(ck.model).blocks(ck.model)[0].parameters())
    opt2 = torch.optim.AdamW(ck.model.parameters(), lr=1e-3)
    L.load_optimizer_state(opt2, ck.model, ck.optimizer)
    b2 = L.TorchBackend(ck.model, opt2, adapters=hf.hf_adapters(), live=ck.live, block_ids=ck.block_ids)
    live_names = {g.name for i, g in enumerate(b.groups()) if not b.layout.is_pruned(i)}
    assert {g.name for g in b2.groups()} == live_names
    assert all(math.isfinite(v) for v in train(ck.model, opt2, n=2, seed=40))


def test_export_pretrained_uniform_loads_per_layer_refuses(tmp_path):
    model = llama_like("Llama", n_layer=3)
    b = L.TorchBackend(model, torch.optim.SGD(model.parameters(), lr=0.1), adapters=hf.hf_adapters())
    b.apply(prune_event(b, ["blocks.0.attn.head.1", "blocks.1.attn.head.1", "blocks.2.attn.head.1"]))
    b.apply(prune_event(b, ["blocks.1", "blocks.0.mlp.block.0", "blocks.2.mlp.block.0"], eid=1))
    hf_checkpoint.export_pretrained(model, tmp_path / "uniform")
    loaded = T.LlamaForCausalLM.from_pretrained(tmp_path / "uniform")
    assert loaded.config.num_hidden_layers == 2 and loaded.config.num_key_value_heads == 1
    x = tokens(6)
    torch.testing.assert_close(logits(loaded, x), logits(model, x), rtol=1e-6, atol=1e-6)
    b.restore(prune_event(b, ["blocks.1"], eid=1, action=Action.RESTORE))
    b.apply(prune_event(b, ["blocks.0.mlp.block.0"], eid=2))  # now MLP widths differ: 64, 128, 128
    with pytest.raises(UnsupportedModelError, match="one value for every layer"):
        hf_checkpoint.export_pretrained(model, tmp_path / "ragged")


def test_export_gpt2_removed_layer_ok_pruned_head_refused(tmp_path):
    model = gpt2(n_layer=3)
    b = L.TorchBackend(model, torch.optim.SGD(model.parameters(), lr=0.1), adapters=hf.hf_adapters())
    b.apply(prune_event(b, ["blocks.1"]))
    hf_checkpoint.export_pretrained(model, tmp_path / "g")
    loaded = T.GPT2LMHeadModel.from_pretrained(tmp_path / "g")
    x = tokens(7)
    torch.testing.assert_close(logits(loaded, x), logits(model, x), rtol=1e-6, atol=1e-6)
    b.apply(prune_event(b, ["blocks.0.attn.head.0", "blocks.2.attn.head.0"], eid=1))  # uniform, but 3 heads
    with pytest.raises(UnsupportedModelError, match="head_dim = n_embd // n_head"):
        hf_checkpoint.export_pretrained(model, tmp_path / "h")


# ---- unsupported and absent ------------------------------------------------------------
def test_unsupported_module_is_named():
    model = llama_like("Llama")
    model.model.layers[1].self_attn.q_proj = torch.nn.Sequential(torch.nn.Linear(D, 4 * HD))
    with pytest.raises(UnsupportedModelError, match=r"model\.layers\.1\.self_attn\.q_proj"):
        L.TorchBackend(model, torch.optim.SGD(model.parameters(), lr=0.1), adapters=hf.hf_adapters())
    bare = T.GPT2Model(T.GPT2Config(n_embd=D, n_layer=1, n_head=4, vocab_size=V, n_positions=S))
    with pytest.raises(UnsupportedModelError, match="GPT2Model"):
        L.TorchBackend(bare, torch.optim.SGD(bare.parameters(), lr=0.1), adapters=hf.hf_adapters())


def test_absent_transformers_raises_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert not hf.HFGPT2Adapter().supports(torch.nn.Linear(2, 2))  # no import needed to decline
    with pytest.raises(ImportError, match="transformers"):
        hf._transformers()


@pytest.mark.parametrize("make", [lambda: gpt2(n_layer=3), lambda: llama_like("Llama", n_layer=3),
                                  lambda: llama_like("Qwen2", n_layer=3, use_sliding_window=True, sliding_window=4,
                                                     max_window_layers=1)])
def test_generation_with_the_kv_cache_after_a_block_and_heads_are_removed(make):
    """Greedy generation with the KV cache after surgery (a middle block and a head gone) gives
    the tokens of cache-free generation and of the zeroed, unpruned reference, and the cached
    step-by-step logits equal one full forward pass."""
    model = make()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = L.TorchBackend(model, opt, adapters=hf.hf_adapters())
    train(model, opt)
    ref, orig = copy.deepcopy(model), copy.deepcopy(model)
    b.apply(prune_event(b, ["blocks.1", "blocks.2.attn.head.0"]))
    a = hf.adapter_of(ref)
    with torch.no_grad():
        zero_block(a.blocks(ref)[1])
        if isinstance(model, T.GPT2LMHeadModel):
            zero_gpt2_head(ref, 2, 0)
        else:
            zero_kv_group(ref, 2, 0)
    x = tokens(5, B=1)[:, :6]
    model.eval(), ref.eval()
    kw = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = model.generate(x, use_cache=True, **kw)
        plain = model.generate(x, use_cache=False, **kw)
        zeroed = ref.generate(x, use_cache=True, **kw)
        full = model(cached).logits
        out, past, steps = model(cached[:, :6], use_cache=True), None, []
        past, steps = out.past_key_values, [out.logits]
        for t in range(6, cached.shape[1]):
            out = model(cached[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
    assert torch.equal(cached, plain) and torch.equal(cached, zeroed)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)
    assert (logits(orig, cached) - full).abs().max() > 1e-3  # the surgery changed the model
