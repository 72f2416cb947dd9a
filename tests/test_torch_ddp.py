"""DDP: 2 CPU processes (gloo). A controller that decides FROM the statistics prunes the
lowest-|w|^2 head and MLP block at its first report; both ranks must see identical stats,
apply identical events, end with identical shapes and identical parameters."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from lyactl.control.groups import Action, Decision, Event, GroupKind  # noqa: E402
from scripted import Out  # noqa: E402

STEPS, INTERVAL = 6, 2




class ArgminController:
    """Report 1: PRUNE the live HEAD and MLP group with the smallest ``g_sq`` (rank-local
    values differ unless the statistics are synchronised); then FREEZE block 0 at report 2."""

    def __init__(self, groups):
        self.groups, self.seen = groups, []

    def pick(self, stats, kind):
        cand = [i for i, g in enumerate(self.groups) if g.kind is kind and np.isfinite(stats.g_sq[i])]
        return min(cand, key=lambda i: stats.g_sq[i])

    def observe(self, stats):
        self.seen.append(stats)
        n = len(self.seen)
        if n == 1:
            idx = [self.pick(stats, GroupKind.HEAD), self.pick(stats, GroupKind.MLP_BLOCK)]
            return Out(events=(Event(0, stats.step, tuple(Decision(stats.step, self.groups[i].name, i, Action.PRUNE) for i in idx)),))
        if n == 2:
            i = next(i for i, g in enumerate(self.groups) if g.name == "blocks.0")
            return Out(events=(Event(1, stats.step, (Decision(stats.step, "blocks.0", i, Action.FREEZE),)),))
        return Out()


def _worker(rank, world, tmp):
    import lyactl_torch as L
    from lyactl_torch.ddp import DistributedLyactl

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = L.GPT(L.GPTConfig(vocab_size=29, seq_len=16, d_model=64, n_layer=2, n_head=4, head_dim=16, mlp_hidden=192))
    torch.manual_seed(100 + rank)  # different data on each rank
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ctl = DistributedLyactl(torch.nn.parallel.DistributedDataParallel(model), opt, None, interval=INTERVAL)
    ctl.controller = ArgminController(ctl.backend.groups())
    wrappers = [ctl.ddp]
    for _ in range(STEPS):
        x = torch.randint(0, 29, (2, 17))
        opt.zero_grad(set_to_none=True)
        loss = ctl.ddp(x[:, :-1], x[:, 1:])[1]
        loss.backward()
        opt.step()
        ctl.step(loss)
        if ctl.ddp is not wrappers[-1]:
            wrappers.append(ctl.ddp)
    torch.save({"events": [[(d.group, d.action.value) for d in e.decisions] for e in ctl.events],
                "stats": [np.stack([s.g_sq, s.w_sq]) for s in ctl.stats], "loss": [s.loss for s in ctl.stats],
                "shapes": {n: tuple(p.shape) for n, p in model.named_parameters()},
                "params": {n: p.detach().clone() for n, p in model.named_parameters()},
                "rebuilds": len(wrappers) - 1}, f"{tmp}/rank{rank}.pt")
    dist.barrier()  # all ranks done before gloo is torn down (a racing teardown aborts: tests/fsdp_run.finish)
    dist.destroy_process_group()


def test_two_ranks_decide_alike_and_stay_in_sync(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert len(r0["events"]) == 2 and r0["events"] == r1["events"] and r0["rebuilds"] == r1["rebuilds"] == 2
    assert {a for e in r0["events"] for _, a in e} == {"prune", "freeze"}
    for a, b in zip(r0["stats"], r1["stats"]):
        np.testing.assert_array_equal(a, b)  # bitwise identical (NaN where equal NaN)
    assert r0["loss"] == r1["loss"]
    assert r0["shapes"] == r1["shapes"] and r0["shapes"]["blocks.0.mlp.fc.weight"][0] + \
        r0["shapes"]["blocks.1.mlp.fc.weight"][0] == 2 * 192 - 64
    for n, p in r0["params"].items():
        assert torch.equal(p, r1["params"][n]), n


def test_stats_synchronisation_is_a_mean(tmp_path):
    """One process, world size 1: synchronise_stats is the identity (mean of one)."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    from lyactl.control.groups import GroupStats
    from lyactl_torch.ddp import synchronise_stats

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/s", rank=0, world_size=1)
    try:
        rng = np.random.default_rng(0)
        arr = {k: rng.random(5) for k in ("w_sq", "dw_sq", "g_sq", "gw", "m_sq", "curv")}
        arr["g_sq"][2] = np.nan
        st = GroupStats(step=3, lr=0.1, loss=1.5, interval=1, **arr)
        out = synchronise_stats(st)
        for k, v in arr.items():
            np.testing.assert_array_equal(getattr(out, k), v)
        assert out.loss == 1.5 and out.step == 3
    finally:
        dist.destroy_process_group()
