"""Batched scoring equals an explicit slow loop, for causal models where batching could go wrong."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from lyactl.errors import InvalidArgumentError, ShapeError, UnsupportedModelError
from lyactl_torch.scoring import Request, logits_of, mc_predictions, score_requests

V = 37


class Bigram(torch.nn.Module):
    """logits[b, t] = W[x[b, t]]: depends on the current token only."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(V, V, generator=torch.Generator().manual_seed(seed)) * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W[x]


class PrefixMean(torch.nn.Module):
    """logits[b, t] = mean_{s <= t} E[x[b, s]] @ U: causal, depends on the whole prefix."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.E = torch.nn.Parameter(torch.randn(V, 6, generator=g))
        self.U = torch.nn.Parameter(torch.randn(6, V, generator=g) * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.E[x].cumsum(dim=1) / torch.arange(1, x.shape[1] + 1)[None, :, None]
        return h @ self.U


def slow_score(model: torch.nn.Module, req: Request, max_len: int) -> tuple[float, bool]:
    """One request at a time, one token at a time, float64, no padding."""
    whole = list(req.context) + list(req.continuation)
    inp = whole[-(max_len + 1):][:-1]
    m = len(req.continuation)
    with torch.no_grad():
        logits = model(torch.tensor([inp]))[0].double()
    total, greedy = 0.0, True
    for k in range(m):
        row = logits[len(inp) - m + k]
        lse = math.log(sum(math.exp(v) for v in row.tolist()))
        total += row[req.continuation[k]].item() - lse
        greedy &= int(row.argmax()) == req.continuation[k]
    return total, greedy


def random_requests(seed: int, n: int, max_ctx: int = 20, max_cont: int = 5) -> list[Request]:
    rng = random.Random(seed)
    return [Request(tuple(rng.randrange(V) for _ in range(rng.randint(1, max_ctx))),
                    tuple(rng.randrange(V) for _ in range(rng.randint(1, max_cont)))) for _ in range(n)]


@pytest.mark.parametrize("model_cls", [Bigram, PrefixMean])
@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_equals_slow_loop(model_cls: type, batch_size: int) -> None:
    model = model_cls(seed=batch_size)
    reqs = random_requests(seed=batch_size, n=25)
    got = score_requests(model, reqs, max_len=64, batch_size=batch_size)
    for r, s in zip(reqs, got):
        want, greedy = slow_score(model, r, 64)
        assert s.logprob == pytest.approx(want, abs=1e-4)
        assert s.n_tokens == len(r.continuation)
        assert s.is_greedy == greedy


def test_left_truncation_to_max_len() -> None:
    model = PrefixMean(seed=3)
    reqs = random_requests(seed=7, n=12, max_ctx=40, max_cont=4)
    got = score_requests(model, reqs, max_len=8, batch_size=5)
    for r, s in zip(reqs, got):
        assert s.logprob == pytest.approx(slow_score(model, r, 8)[0], abs=1e-4)
    # truncation changes the answer for a long context with a prefix-dependent model
    long = [r for r in reqs if len(r.context) + len(r.continuation) > 9]
    assert long
    full = score_requests(model, long, max_len=64, batch_size=5)
    cut = score_requests(model, long, max_len=8, batch_size=5)
    assert any(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(full, cut))


def test_greedy_true_when_continuation_is_argmax() -> None:
    model = Bigram(seed=1)
    ctx = (4,)
    y1 = int(model.W[4].argmax())
    y2 = int(model.W[y1].argmax())
    good, bad = score_requests(model, [Request(ctx, (y1, y2)), Request(ctx, (y1, (y2 + 1) % V))], max_len=16, batch_size=2)
    assert good.is_greedy and not bad.is_greedy


@pytest.mark.parametrize("wrap", [lambda t: t, lambda t: SimpleNamespace(logits=t), lambda t: (t, None)])
def test_output_forms(wrap) -> None:
    model = Bigram(seed=2)
    reqs = random_requests(seed=2, n=6)
    want = score_requests(model, reqs, max_len=32, batch_size=4)
    got = score_requests(lambda x: wrap(model(x)), reqs, max_len=32, batch_size=4)
    assert [s.logprob for s in got] == pytest.approx([s.logprob for s in want], abs=1e-6)


def test_max_batch_tokens_does_not_change_results() -> None:
    model = PrefixMean(seed=5)
    reqs = random_requests(seed=5, n=20)
    a = score_requests(model, reqs, max_len=64, batch_size=16)
    b = score_requests(model, reqs, max_len=64, batch_size=16, max_batch_tokens=30)
    assert [s.logprob for s in a] == pytest.approx([s.logprob for s in b], abs=1e-5)


def test_bad_inputs() -> None:
    model = Bigram()
    with pytest.raises(InvalidArgumentError, match="continuation"):
        score_requests(model, [Request((1,), ())], max_len=8, batch_size=1)
    with pytest.raises(InvalidArgumentError, match="context"):
        score_requests(model, [Request((), (1,))], max_len=8, batch_size=1)
    with pytest.raises(InvalidArgumentError, match="max_len"):
        score_requests(model, [Request((1,), (1,) * 9)], max_len=8, batch_size=1)
    with pytest.raises(UnsupportedModelError, match="model output"):
        logits_of({"logits": 1})
    with pytest.raises(ShapeError, match="logits"):
        score_requests(lambda x: model(x)[:, :1], [Request((1, 2, 3), (4,))], max_len=8, batch_size=1)


def test_mc_predictions_raw_vs_normalised() -> None:
    # choice 0 has the higher total, choice 1 the higher per-character log-probability
    assert mc_predictions([-10.0, -12.0], [2, 10]) == (0, 1)
    assert mc_predictions([-1.0, -1.0], [3, 3]) == (0, 0)  # ties go to the lowest index
    with pytest.raises(InvalidArgumentError):
        mc_predictions([-1.0], [0])
