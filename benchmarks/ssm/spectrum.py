"""Which memory lengths does each state-selection rule keep? The spectrum of an LRU layer after
a cut to a quarter of its states, per rule (issue 14: why balanced truncation trains worse than
random modes).

    python -m benchmarks.ssm.spectrum --out benchmarks/results/ssm_spectrum.json

An :class:`~lyactl_torch.ssm.lru.LRU` of the h200 preset's shape (``N = 1024`` complex modes,
``H = 256``, ``|lam|`` area-uniform on ``[0.9, 0.999]``) at its initialisation: the LM runs cut
at 10-25 % of training, where the Hankel singular values are still flat and the eigenvalues
have moved little from it (a statement about these runs, measured by ``lam_shift`` in a trained
layer only if one is given). Each rule keeps ``keep * N`` modes (``2 keep N`` real states for the
balanced one) and the record gives, per rule, quantiles of the kept modes' memory length
``1 / (1 - |lam|)`` (steps) and the share of modes that are slow (``|lam| > 0.99``) or real
(the balanced reduction yields real eigenvalues, stored with the phase clamp ``THETA_MIN``).
Rules: ``full``; ``random`` (uniform); ``magnitude`` (``|C_i||B_i|/(1-|lam_i|)``, largest);
``smallest`` (the HSV proxy ``|C_i||B_i|/(1-|lam_i|^2)``, smallest); ``horizon`` (the same
proxy over the 512-step sequence, largest: :func:`~lyactl_torch.ssm.truncate.horizon_scores`); ``balanced`` (the
re-diagonalised eigenvalues of the balanced truncation of the real-output system, the
lyactl arm). CPU, float64, seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from lyactl_torch.ssm import balance_torch
from lyactl_torch.ssm.lru import LRU, LRUConfig
from lyactl_torch.ssm.truncate import horizon_scores, hsv_proxy_scores, keep_top, magnitude_scores

__all__ = ["spectra", "main"]

SLOW = 0.99


def _describe(lam: np.ndarray) -> dict:
    """Quantiles of the memory length ``1/(1-|lam|)`` and the slow / real shares."""
    mem = 1.0 / (1.0 - np.abs(lam))
    q = np.quantile(mem, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {"n": int(lam.size), "memory_q10_25_50_75_90": [float(x) for x in q],
            "share_slow": float(np.mean(np.abs(lam) > SLOW)),
            "share_real": float(np.mean(np.abs(np.angle(lam)) < 1e-9) if lam.size else 0.0)}


def spectra(N: int, H: int, keep: float, seed: int, seq: int = 512) -> dict:
    """The five rules' kept spectra for one freshly initialised layer."""
    layer = LRU(LRUConfig(H, N), torch.Generator().manual_seed(seed)).double()
    lam = layer.system()[0]
    r = int(round(N * keep))
    rng = np.random.default_rng(seed)
    out = {"full": _describe(lam),
           "random": _describe(lam[np.sort(rng.permutation(N)[:r])]),
           "magnitude": _describe(lam[keep_top(magnitude_scores(layer), r)]),
           "smallest": _describe(lam[keep_top(hsv_proxy_scores(layer), r, largest=False)]),
           "horizon": _describe(lam[keep_top(horizon_scores(seq)(layer), r)])}
    tr = balance_torch.lru_truncation(*balance_torch.diagonal_modes(layer), rank=2 * r)
    out["balanced"] = _describe(np.asarray(tr.A))
    hsv = np.asarray(tr.hsv)
    out["hsv"] = {"top": float(hsv[0]), "median": float(np.median(hsv)),
                  "discarded_share": float(hsv[2 * r:].sum() / hsv.sum())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-state", type=int, default=1024)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--keep", type=float, default=0.25)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    res = {"n_state": args.n_state, "d_model": args.d_model, "keep": args.keep, "slow": SLOW,
           "seeds": {str(s): spectra(args.n_state, args.d_model, args.keep, s) for s in args.seeds}}
    print(json.dumps(res["seeds"][str(args.seeds[0])], indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
