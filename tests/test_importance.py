"""Activation importance (Minitron-style) ranks a head whose output is zero lowest, and the
one-shot event built from it meets the FLOPs target; the scores serve as a baselines ScoreRule."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lyactl.control.baselines import ReplayController, ScheduledEvent  # noqa: E402
from lyactl.control.groups import GroupKind  # noqa: E402
from lyactl_torch import TorchBackend  # noqa: E402
from lyactl_torch.importance import activation_importance, activation_rule, oneshot_event  # noqa: E402
from lyactl_torch.model import GPT, GPTConfig  # noqa: E402


def model_and_backend(seed=0):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layer=2, n_head=4, head_dim=8, mlp_hidden=64))
    return m, TorchBackend(m, torch.optim.SGD(m.parameters(), lr=0.1), block=16)


@pytest.mark.parametrize("layer, head", [(0, 0), (1, 2), (0, 3)])
def test_a_zeroed_head_scores_lowest(layer, head):
    m, b = model_and_backend(layer * 4 + head)
    with torch.no_grad():  # zero V rows: the head's output before o is exactly zero
        m.blocks[layer].attn.v.weight[head * 8:(head + 1) * 8] = 0.0
    calib = [torch.randint(0, 64, (4, 16)) for _ in range(3)]
    scores = activation_importance(b.layout, calib)
    heads = [i for i, g in enumerate(b.groups()) if g.kind is GroupKind.HEAD]
    assert min(heads, key=lambda i: scores[i]) == b.layout.index[f"blocks.{layer}.attn.head.{head}"]
    assert scores[b.layout.index[f"blocks.{layer}.attn.head.{head}"]] == 0.0
    assert all(scores[i] > 0 for i in heads if b.groups()[i].name != f"blocks.{layer}.attn.head.{head}")
    others = [i for i, g in enumerate(b.groups()) if g.kind not in (GroupKind.HEAD, GroupKind.MLP_BLOCK)]
    assert np.all(np.isinf(scores[others]))  # layers and channels are not scored


def test_mlp_scores_are_the_mean_absolute_activation():
    m, b = model_and_backend(5)
    x = torch.randint(0, 64, (2, 16))
    seen = {}
    h = m.blocks[1].mlp.proj.register_forward_pre_hook(lambda mod, a: seen.setdefault("a", a[0].detach()))
    scores = activation_importance(b.layout, [x])
    h.remove()
    want = seen["a"].abs().reshape(-1, 64).mean(0).reshape(4, 16).mean(1).double().numpy()
    got = np.array([scores[b.layout.index[f"blocks.1.mlp.block.{j}"]] for j in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("target", [0.9, 0.7, 0.5])
def test_oneshot_event_meets_the_target_with_the_fewest_groups(target):
    m, b = model_and_backend(1)
    scores = activation_importance(b.layout, [torch.randint(0, 64, (4, 16))])
    ev = oneshot_event(b.groups(), b.constraints(), scores, b.flops_model, target)
    idx = [d.index for d in ev.decisions]
    status = np.zeros(len(b.groups()), np.int8)
    status[idx] = 2
    dense = b.flops_model(np.zeros_like(status))
    assert b.flops_model(status) <= target * dense
    status[idx[-1]] = 0  # one fewer does not meet it (the count is minimal in select's order)
    assert b.flops_model(status) > target * dense
    assert all(c.verdict.value == "unknown" for d in ev.decisions for c in d.certificates)
    b.apply(ev)
    assert sum(p.numel() for p in m.parameters()) < sum(p.numel() for p in model_and_backend(1)[0].parameters())


def test_activation_rule_drives_the_replay_baseline():
    m, b = model_and_backend(2)
    scores = activation_importance(b.layout, [torch.randint(0, 64, (4, 16))])
    ctl = ReplayController(b.groups(), b.constraints(), [ScheduledEvent(0, {"mlp_block": 2})], activation_rule(scores))
    for _ in range(3):
        b.observe_step(1.0, 0.1)
    out = ctl.observe(b.statistics())
    chosen = [d.index for d in out.events[0].decisions]
    mlp = [i for i, g in enumerate(b.groups()) if g.kind is GroupKind.MLP_BLOCK]
    assert sorted(chosen) == sorted(sorted(mlp, key=lambda i: scores[i])[:2])
