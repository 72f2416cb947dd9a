"""The ``uniform`` constraint: selection takes the same number of groups from every live block,
and a uniformly pruned Hugging Face model exports to a directory that ``transformers`` loads
with lyactl blocked from import, giving the pruned model's logits."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lyactl.control.groups import PRUNED, Constraint, Group, GroupKind
from lyactl.control.selection import Structure, select
from lyactl.errors import InvalidArgumentError


# ---- selection (core, no torch) --------------------------------------------------------
def toy(n_layers, per_layer):
    """Groups ``[layer 0: per_layer heads, LAYER], [layer 1: ...]`` and their structure."""
    groups = []
    for b in range(n_layers):
        groups += [Group(f"b{b}.h{j}", GroupKind.HEAD, b, 10, 1.0, 0.0) for j in range(per_layer)]
        groups.append(Group(f"b{b}", GroupKind.LAYER, b, 100, 10.0, 1.0))
    heads = tuple(i for i, g in enumerate(groups) if g.kind is GroupKind.HEAD)
    per = [Constraint(tuple(i for i in heads if groups[i].layer == b), 1) for b in range(n_layers)]
    cons = (*per, Constraint(heads, uniform=True))
    s = Structure(np.array([g.kind is GroupKind.LAYER for g in groups]), np.array([g.layer for g in groups]), cons)
    return groups, s


def pruned_per_live_layer(groups, status):
    gone = {g.layer for i, g in enumerate(groups) if g.kind is GroupKind.LAYER and status[i] == PRUNED}
    return {b: sum(1 for i, g in enumerate(groups) if g.layer == b and g.kind is GroupKind.HEAD and status[i] == PRUNED)
            for b in {g.layer for g in groups} - gone}


@settings(max_examples=60, deadline=None)
@given(n_layers=st.integers(1, 4), per_layer=st.integers(1, 4), seed=st.integers(0, 2**31 - 1),
       rounds=st.integers(1, 6), limit=st.integers(1, 20))
def test_select_keeps_the_pruned_count_equal_in_every_live_block(n_layers, per_layer, seed, rounds, limit):
    groups, s = toy(n_layers, per_layer)
    rng = np.random.default_rng(seed)
    status = np.zeros(len(groups), np.int8)
    for _ in range(rounds):
        alive = [i for i in range(len(groups)) if status[i] != PRUNED and rng.random() < 0.6]
        ready = {int(i): PRUNED for i in rng.permutation(alive)}
        picked = select(ready, status, s, limit)
        assert len(picked) <= limit and all(i in ready for i, _ in picked)
        for i, a in picked:
            status[i] = a
        counts = pruned_per_live_layer(groups, status)
        assert len(set(counts.values())) <= 1, counts
        for b in counts:  # the per-block min_keep still holds
            assert counts[b] < per_layer


def test_a_block_with_no_ready_member_blocks_the_uniform_prune():
    groups, s = toy(2, 3)
    status = np.zeros(len(groups), np.int8)
    layer0_heads = [i for i, g in enumerate(groups) if g.layer == 0 and g.kind is GroupKind.HEAD]
    assert select({i: PRUNED for i in layer0_heads}, status, s, 64) == []
    both = {0: PRUNED, 4: PRUNED, 1: PRUNED}  # heads b0.h0, b1.h0, b0.h1 in priority order
    assert sorted(select(both, status, s, 64)) == [(0, PRUNED), (4, PRUNED)]
    assert select(both, status, s, 1) == []  # the pair does not fit in one group


def test_uniform_and_together_exclude_each_other():
    with pytest.raises(InvalidArgumentError, match="together"):
        Constraint((0, 1), together=True, uniform=True)


# ---- Hugging Face round trip -----------------------------------------------------------
torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
T.logging.set_verbosity_error()

import lyactl_torch as L  # noqa: E402
from lyactl.control.groups import Action, Decision, Event  # noqa: E402
from lyactl.errors import UnsupportedModelError  # noqa: E402
from lyactl_torch import hf, hf_checkpoint  # noqa: E402
from test_torch_hf import gpt2, llama_like, tokens, train  # noqa: E402

LOADER = textwrap.dedent("""
    import json, sys
    root = {root!r}
    sys.path = [p for p in sys.path if p not in ("", root) and not p.startswith(root + "/backends")
                and "editable" not in p]
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]  # the dev install's finder
    for name in ("lyactl", "lyactl_torch"):
        sys.modules[name] = None  # an import of lyactl now fails
    import torch, transformers
    transformers.logging.set_verbosity_error()
    x = torch.load(sys.argv[1])
    for d in json.loads(sys.argv[2]):
        model = transformers.AutoModelForCausalLM.from_pretrained(d).eval()
        with torch.no_grad():
            torch.save(model(x).logits, d + "/logits.pt")
    try:
        import lyactl_torch  # noqa: F401
        print("lyactl_torch importable")
    except ImportError:
        pass
    print(sorted(m for m, v in sys.modules.items() if m.startswith("lyactl") and v is not None))
""")


def uniform_prune(model, rng):
    """Prune through the controller's selection: every group but blocks 0 and 2 ready in a random
    priority order,
    the backend's constraints plus :func:`hf.uniform_constraints`; apply as one event."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    b = L.TorchBackend(model, opt, adapters=hf.hf_adapters())
    train(model, opt)
    groups = b.groups()
    cons = (*b.constraints(), *hf.uniform_constraints(model, groups))
    s = Structure(np.array([g.kind is GroupKind.LAYER for g in groups]), np.array([g.layer for g in groups]), cons)
    status = np.zeros(len(groups), np.int8)
    ready = {int(i): PRUNED for i in rng.permutation(len(groups))  # every group but two of the blocks
             if groups[i].kind is not GroupKind.LAYER or groups[i].name == "blocks.1"}
    picked = select(ready, status, s, 64)
    assert picked, "nothing selected"
    b.apply(Event(0, b.step, tuple(Decision(b.step, groups[i].name, i, Action.PRUNE) for i, _ in picked)))
    return b, picked


MAKERS = {"gpt2": lambda: gpt2(n_layer=3, seed=1), "llama": lambda: llama_like("Llama", n_layer=3, seed=2),
          "qwen2": lambda: llama_like("Qwen2", n_layer=3, seed=3)}


def test_uniform_prune_exports_and_loads_without_lyactl(tmp_path):
    x = tokens(11)
    torch.save(x, tmp_path / "x.pt")
    mine, dirs = {}, []
    for name, make in MAKERS.items():
        model = make()
        dense = sum(p.numel() for p in model.parameters())
        b, picked = uniform_prune(model, np.random.default_rng(len(name)))
        assert sum(p.numel() for p in model.parameters()) < dense
        d = str(tmp_path / name)
        hf_checkpoint.export_pretrained(model, d)
        dirs.append(d)
        model.eval()
        with torch.no_grad():
            mine[d] = model(x).logits
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", LOADER.format(root=root), str(tmp_path / "x.pt"), json.dumps(dirs)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines() == ["[]"]  # lyactl blocked, and no lyactl module loaded there
    for d in dirs:
        theirs = torch.load(os.path.join(d, "logits.pt"))
        torch.testing.assert_close(theirs, mine[d], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_uniform_prune_shapes_are_one_width_per_layer(name):
    model = MAKERS[name]()
    b, picked = uniform_prune(model, np.random.default_rng(7))
    a = hf.adapter_of(model)
    blocks = a.blocks(model)
    if name == "gpt2":
        assert {blk.attn.num_heads for blk in blocks} == {model.config.n_head}  # GPT-2 heads are never cut
        widths = {blk.mlp.c_fc.weight.shape[1] for blk in blocks}
    else:
        assert len({blk.self_attn.k_proj.weight.shape[0] for blk in blocks}) == 1
        widths = {blk.mlp.gate_proj.weight.shape[0] for blk in blocks}
    assert len(widths) == 1


def test_non_uniform_prune_is_refused_and_names_save_hf(tmp_path):
    model = llama_like("Qwen2", n_layer=2)
    b = L.TorchBackend(model, torch.optim.SGD(model.parameters(), lr=0.1), adapters=hf.hf_adapters())
    i = b.layout.index["blocks.0.mlp.block.0"]
    b.apply(Event(0, 0, (Decision(0, "blocks.0.mlp.block.0", i, Action.PRUNE),)))
    with pytest.raises(UnsupportedModelError, match="one value for every layer.*use save_hf for per-layer widths"):
        hf_checkpoint.export_pretrained(model, tmp_path / "ragged")


def test_switched_off_kinds_are_never_pruned():
    model = llama_like("Llama", n_layer=2)
    b = L.TorchBackend(model, torch.optim.SGD(model.parameters(), lr=0.1), adapters=hf.hf_adapters())
    groups = b.groups()
    cons = (*b.constraints(), *hf.uniform_constraints(model, groups, heads=False, layers=False))
    s = Structure(np.array([g.kind is GroupKind.LAYER for g in groups]), np.array([g.layer for g in groups]), cons)
    picked = select({i: PRUNED for i in range(len(groups))}, np.zeros(len(groups), np.int8), s, 64)
    assert picked and {groups[i].kind for i, _ in picked} == {GroupKind.MLP_BLOCK}
