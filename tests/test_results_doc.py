"""The results page generator: the dense frontier is the Pareto envelope of the dense sizes,
and the table and plots are written from a results file of the benchmark's schema."""

from __future__ import annotations


from hypothesis import given
from hypothesis import strategies as st


import benchmarks.pretrain.results_doc as results_doc  # noqa: E402

_points = st.lists(st.tuples(st.floats(1.0, 1e3), st.floats(0.5, 3.0)), min_size=1, max_size=12)


def _dominated(p: tuple[float, float], pts: list[tuple[float, float]]) -> bool:
    return any(q != p and q[0] <= p[0] and q[1] <= p[1] for q in pts)


@given(_points)
def test_the_frontier_is_exactly_the_undominated_points(pts):
    front = results_doc.pareto(pts)
    assert all(not _dominated(p, pts) for p in front)
    assert {p for p in set(pts) if not _dominated(p, pts)} == set(front)
    assert [c for c, _ in front] == sorted(c for c, _ in front)  # by increasing cost
    assert all(a[1] > b[1] for a, b in zip(front, front[1:]))  # loss strictly falling


def _arm(arm: str, seed: int, flops: float, bpb: float, tokens: int = 1000) -> dict:
    return {"arm": arm, "id": f"{arm}-s{seed}", "seed": seed, "train_flops": flops, "val_bpb": bpb,
            "tokens": tokens, "wall_s": 1.0, "model": {"d_model": 8, "n_layer": 1, "n_head": 1, "mlp_hidden": 32},
            "losses": [[0, 3.0], [10, 2.5], [20, 2.0]]}


def test_table_and_plots_from_a_results_file(tmp_path):
    arms = [_arm("dense", 0, 4e12, 1.30), _arm("frontier", 0, 1e12, 1.50), _arm("frontier", 0, 2e12, 1.40),
            _arm("frontier", 0, 2.2e12, 1.45), _arm("lyactl", 0, 2.4e12, 1.35), _arm("random", 0, 2.4e12, 1.36)]
    res = {"name": "t", "gpu": "cpu", "arms": arms}
    md = results_doc.table(res)
    assert md.count("\n| ") == len(arms)  # one row per run below the header and its separator
    assert results_doc.pareto(results_doc._dense_sizes(res)[1000]) == [(1e12, 1.5), (2e12, 1.4), (4e12, 1.3)]
    results_doc.plot(res, tmp_path / "p.png")
    results_doc.gap_plot(res, tmp_path / "g.png")
    for name in ("p.png", "g.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
