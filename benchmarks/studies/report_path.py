"""Which modules one statistics report passes through on its way to surgery (traced).

A tiny GPT with two dead units (a head and an MLP block held at exactly zero) trains under the
plain loop; the report whose controller output carries an event is traced with
``sys.setprofile``, and every lyactl / lyactl_torch module with a Python function called
during that ``Lyactl.step`` is listed, with the number of times the call chain crosses the
core/backend boundary. Version-agnostic (it ran on the commit before the redesign too)::

    PYTHONPATH=.:backends python -m benchmarks.studies.report_path [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["trace_report", "main"]


def _controller_classes():
    try:  # after the redesign
        from lyactl.control.controller import Controller, ControllerConfig
        from lyactl.control.monitors import MonitorConfig
    except ImportError:  # before it
        from lyactl.controller import Controller, ControllerConfig
        from lyactl.monitors import MonitorConfig
    return Controller, ControllerConfig, MonitorConfig


def _module_of(frame) -> str | None:
    name = frame.f_globals.get("__name__", "")
    return name if name.split(".")[0] in ("lyactl", "lyactl_torch") else None


def _summary(calls: list[str]) -> dict:
    """Distinct modules of a call sequence and how often it crosses the core/backend line."""
    side = ["backend" if c.startswith("lyactl_torch") else "core" for c in calls]
    crossings = sum(1 for s, t in zip(side, side[1:]) if s != t)
    return {"modules": sorted(set(calls)), "n_modules": len(set(calls)), "boundary_crossings": crossings}


def trace_report(steps: int = 40) -> dict:
    """Train until the first event; return the modules of the report that made it: the whole
    ``Lyactl.step`` (statistics, decision, surgery, the rebuild after it) and its prefix up to
    the first call into the surgery module (statistics to surgery)."""
    import torch
    import lyactl_torch as L

    Controller, ControllerConfig, MonitorConfig = _controller_classes()
    torch.manual_seed(0)
    model = L.GPT(L.GPTConfig(vocab_size=64, seq_len=16, d_model=64, n_layer=2, n_head=2, head_dim=16, mlp_hidden=128))
    with torch.no_grad():
        a, m = model.blocks[1].attn, model.blocks[0].mlp
        for w in (a.q.weight, a.k.weight, a.v.weight):
            w[:16] = 0
        a.o.weight[:, :16] = 0
        m.fc.weight[:64] = 0
        m.proj.weight[:, :64] = 0
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loop = L.Lyactl(model, opt, None, interval=2, block=64)
    cfg = ControllerConfig(monitors=MonitorConfig(window=3, lag=1), hysteresis=2)
    loop.controller = Controller(loop.backend.groups(), loop.backend.constraints(), cfg, flops_model=loop.backend.flops_model)
    x = torch.randint(0, 64, (4, 17))
    for _ in range(steps):
        loss = model(x[:, :-1], x[:, 1:])[1]
        loss.backward()
        opt.step()
        calls: list[str] = []

        def prof(frame, event, arg):
            if event == "call":
                mod = _module_of(frame)
                if mod is not None and (not calls or calls[-1] != mod):
                    calls.append(mod)
        n_events = len(loop.events)
        sys.setprofile(prof)
        try:
            loop.step(loss)
        finally:
            sys.setprofile(None)
        opt.zero_grad(set_to_none=True)
        if len(loop.events) > n_events:
            to_surgery = calls[:calls.index("lyactl_torch.surgery") + 1]
            return {"report": _summary(calls), "statistics_to_surgery": _summary(to_surgery)}
    raise RuntimeError(f"no event within {steps} steps")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    res = trace_report()
    print(json.dumps(res, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
