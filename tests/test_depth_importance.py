"""Depth and channel importance (ShortGPT's Block Influence, Minitron's channel activation): an
identity block scores zero and lowest, channel scores are the residual stream's mean |x|, the
width scores are unchanged, and the scores drive a per-kind replay."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lyactl.control.baselines import ReplayController, ScheduledEvent  # noqa: E402
from lyactl.control.groups import GroupKind  # noqa: E402
from lyactl.errors import InvalidArgumentError  # noqa: E402
from lyactl_torch import TorchBackend  # noqa: E402
from lyactl_torch.depth_importance import block_statistics, depth_width_importance  # noqa: E402
from lyactl_torch.importance import activation_importance, activation_rule  # noqa: E402
from lyactl_torch.model import GPT, GPTConfig  # noqa: E402


def _model(seed=0, n_layer=3):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layer=n_layer, n_head=4, head_dim=8, mlp_hidden=64))
    return m, TorchBackend(m, torch.optim.SGD(m.parameters(), lr=0.1), block=16)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_an_identity_block_has_zero_influence_and_scores_lowest(layer):
    m, b = _model(layer)
    with torch.no_grad():  # both branches output zero: the block passes its input through
        m.blocks[layer].attn.o.weight.zero_()
        m.blocks[layer].mlp.proj.weight.zero_()
    calib = [torch.randint(0, 64, (4, 16)) for _ in range(2)]
    BI, _ = block_statistics(b.layout, calib)
    assert BI[layer] == pytest.approx(0.0, abs=1e-12) and all(BI[i] > 1e-6 for i in range(3) if i != layer)
    scores = depth_width_importance(b.layout, calib)
    layers = [i for i, g in enumerate(b.groups()) if g.kind is GroupKind.LAYER]
    assert min(layers, key=lambda i: scores[i]) == b.layout.index[f"blocks.{layer}"]
    width = activation_importance(b.layout, calib)
    kinds = np.array([g.kind for g in b.groups()])
    same = np.isin(kinds, [GroupKind.HEAD, GroupKind.MLP_BLOCK])
    np.testing.assert_array_equal(scores[same], width[same])
    assert np.all(np.isfinite(scores))


def test_channel_scores_are_the_mean_absolute_residual_stream():
    m, b = _model(4)
    x = torch.randint(0, 64, (2, 16))
    seen = []
    hs = [blk.register_forward_pre_hook(lambda mod, a: seen.append(a[0].detach().double())) for blk in m.blocks]
    scores = depth_width_importance(b.layout, [x])
    for h in hs:
        h.remove()
    per_channel = torch.stack([s.abs().reshape(-1, 32).mean(0) for s in seen[:3]]).mean(0).numpy()
    chans = [i for i, g in enumerate(b.groups()) if g.kind is GroupKind.CHANNEL_BLOCK]
    assert len(chans) == 2
    for i in chans:
        units = list(b.layout.refs[i].units)
        assert scores[i] == pytest.approx(per_channel[units].mean(), rel=1e-9)


def test_scores_drive_a_replay_of_counts_per_kind():
    m, b = _model(2)
    with torch.no_grad():
        m.blocks[1].attn.o.weight.zero_()
        m.blocks[1].mlp.proj.weight.zero_()
    scores = depth_width_importance(b.layout, [torch.randint(0, 64, (4, 16))])
    ctl = ReplayController(b.groups(), b.constraints(), [ScheduledEvent(0, {"layer": 1, "head": 2})],
                           activation_rule(scores))
    for _ in range(3):
        b.observe_step(1.0, 0.1)
    out = ctl.observe(b.statistics())
    picked = [b.groups()[d.index] for d in out.events[0].decisions]
    assert [g.name for g in picked if g.kind is GroupKind.LAYER] == ["blocks.1"]
    heads = [i for i, g in enumerate(b.groups()) if g.kind is GroupKind.HEAD and g.layer != 1]
    assert sorted(g.name for g in picked if g.kind is GroupKind.HEAD) == sorted(
        b.groups()[i].name for i in sorted(heads, key=lambda i: scores[i])[:2])


def test_hugging_face_llama_blocks_are_scored():
    T = pytest.importorskip("transformers")
    from lyactl_torch.compress import logits
    from lyactl_torch.hf import hf_adapters

    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    m = T.LlamaForCausalLM(cfg)
    with torch.no_grad():  # block 2 passes its input through
        m.model.layers[2].self_attn.o_proj.weight.zero_()
        m.model.layers[2].mlp.down_proj.weight.zero_()
    b = TorchBackend(m, torch.optim.SGD(m.parameters(), lr=0.1), block=16, adapters=hf_adapters())
    BI, channel = block_statistics(b.layout, [torch.randint(0, 64, (2, 16))], logits)
    assert BI.shape == (3,) and BI[2] == pytest.approx(0.0, abs=1e-9) and BI[:2].min() > 1e-6
    assert channel.shape == (32,) and np.all(channel > 0)


def test_no_calibration_batch_is_refused():
    _, b = _model()
    with pytest.raises(InvalidArgumentError, match="batches"):
        block_statistics(b.layout, [])
