"""The reference GPT: shapes, exact RMSNorm channel invariance, GQA, init, compile."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from lyactl.errors import InvalidArgumentError  # noqa: E402
from test_torch_groups import tiny  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch.model import RMSNorm  # noqa: E402



@pytest.mark.parametrize("kw", [{}, {"n_kv_head": 1, "bias": True}, {"tie": False}])
def test_forward_shapes_loss_and_tying(kw):
    model = tiny(**kw)
    x = torch.randint(0, 97, (2, 17))
    logits = model(x)
    assert logits.shape == (2, 17, 97)
    y = torch.randint(0, 97, (2, 17))
    out, loss = model(x, y)
    torch.testing.assert_close(out, logits)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 97), y.reshape(-1))
    torch.testing.assert_close(loss, ref)
    assert (model.lm_head.weight is model.wte.weight) == kw.get("tie", True)


def test_causal():
    model = tiny().eval()
    x = torch.randint(0, 97, (1, 32))
    y = x.clone()
    y[0, 20:] = (y[0, 20:] + 1) % 97
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :20], model(y)[:, :20])


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa = tiny(n_kv_head=2)
    mha = tiny(n_kv_head=None)
    sd = gqa.state_dict()
    hd, rep = 32, 2
    for i in range(2):
        for nm in ("k", "v"):
            w = sd[f"blocks.{i}.attn.{nm}.weight"].view(2, hd, -1)
            sd[f"blocks.{i}.attn.{nm}.weight"] = w.repeat_interleave(rep, 0).reshape(4 * hd, -1)
    mha.load_state_dict(sd)
    x = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(gqa(x), mha(x))


@settings(max_examples=20, deadline=None)
@given(d=st.integers(1, 16), extra=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_rmsnorm_zero_channels_can_be_removed(d, extra, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, d, generator=g)
    big = RMSNorm(d + extra, d + extra, 1e-6)
    small = RMSNorm(d, d + extra, 1e-6)
    with torch.no_grad():
        big.weight.copy_(torch.randn(d + extra, generator=g))
        small.weight.copy_(big.weight[:d])
    padded = torch.cat([x, torch.zeros(3, extra)], 1)
    torch.testing.assert_close(big(padded)[:, :d], small(x))
    assert torch.equal(big(padded)[:, d:], torch.zeros(3, extra))


def test_init_scales():
    model = tiny(n_layer=3, d=256)
    std = lambda t: float(t.detach().std())  # noqa: E731
    assert abs(std(model.blocks[0].attn.q.weight) - 0.02) < 0.002
    assert abs(std(model.blocks[0].mlp.proj.weight) - 0.02 / math.sqrt(6)) < 0.001


def test_per_block_shapes_and_refresh():
    cfg = L.GPTConfig(vocab_size=97, seq_len=32, d_model=128, n_layer=2, n_head=4, head_dim=32)
    shapes = [L.BlockShape(2, 1, 64), L.BlockShape(4, 4, 128)]
    model = L.GPT(cfg, shapes=shapes, d_live=64)
    assert model.shapes() == shapes and model.d_live == 64
    assert model(torch.randint(0, 97, (1, 8))).shape == (1, 8, 97)
    model.blocks[1].mlp.fc.weight.data = model.blocks[1].mlp.fc.weight.data[:64]
    model.blocks[1].mlp.refresh()
    assert model.blocks[1].mlp.hidden == 64


@pytest.mark.parametrize("bad", [{"n_kv_head": 3}, {"n_head": 0}, {"norm_eps": 0.0}, {"mlp_hidden": 0}])
def test_config_validation(bad):
    kw = dict(vocab_size=97, seq_len=32, d_model=128, n_layer=2, n_head=4) | bad
    with pytest.raises(InvalidArgumentError):
        L.GPTConfig(**kw)


def test_compiles_without_graph_breaks():
    model = tiny()
    model.frozen_prefix = 1
    x = torch.randint(0, 97, (2, 32))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    _, loss = compiled(x, x)
    loss.backward()
    torch.testing.assert_close(loss, model(x, x)[1])
    assert model.blocks[0].attn.q.weight.grad is None and model.blocks[1].attn.q.weight.grad is not None
