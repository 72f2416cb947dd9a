"""Fault injection: kill, fill the disk, corrupt and truncate checkpoints; resume; compare.

A tiny reference GPT trains for ``STEPS`` steps under a real lyactl ``Controller`` set so
that an event (prune) happens at step 8 and the guard watches it until step 14, with a
run checkpoint every 3 steps (between reports, so the saved ``dw_sq`` snapshot matters). Every scenario runs the training in a subprocess
(``python -m benchmarks.studies.fault_injection worker ...``, one CPU thread) and

* sends SIGKILL at a chosen point: inside the training loop before / during (inside
  ``TorchBackend.apply``) / after the event, inside the guard's watch window, and inside a
  checkpoint write (the payload temp file half written, the manifest not yet renamed,
  the payload renamed but no manifest yet). The worker prints ``PAUSE <label>`` and
  sleeps at that point, so the kill lands there deterministically;
* or makes a checkpoint write fail with ``OSError(ENOSPC)`` (disk full): the run must stop
  with a CheckpointError naming the file and leave the previous checkpoint intact;
* or, after a kill, flips bytes in / truncates the newest payload, or garbles its
  manifest: the resume must fall back to the previous good checkpoint;

then resumes in a fresh subprocess and compares losses, decisions, backend record and a
SHA-256 of the final weights with the uninterrupted reference run, bit for bit.
"data lost" counts resumed runs that differ and checkpoints that no good file recovers.

Usage: ``python -m benchmarks.studies.fault_injection`` (writes benchmarks/results/fault_injection.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "EVERY", "build", "run_suite", "main"]

STEPS, EVERY = 24, 3  # checkpoints fall between reports (every 2): the dw_sq snapshot matters
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the run (imported lazily: torch)
def build(steps: int = STEPS, guard_all: bool = True):
    """``(model, optimizer, loop, batches, train_config)`` of the reference run, built
    identically on every call (zeroed units make the controller prune at step 8).

    The controller releases an *exact* event (all removed weights exactly zero) as it is
    applied, without the guard; with ``guard_all`` (default) the guard watches every event
    instead, so the checkpoints written in the watch window hold removed slices.
    """
    import numpy as np
    import torch

    import lyactl_torch as L
    from lyactl.app.runconfig import ControllerSection, build_controller
    from lyactl.control.guard import GuardConfig
    from lyactl_torch.corpus import Batches
    from lyactl_torch.train import TrainConfig, build_optimizer

    torch.manual_seed(0)
    cfg = L.GPTConfig(vocab_size=64, seq_len=16, d_model=64, n_layer=2, n_head=2, head_dim=16, mlp_hidden=128)
    model = L.GPT(cfg)
    with torch.no_grad():  # a dead head and a dead MLP block: zero gradients keep them zero
        a, m = model.blocks[1].attn, model.blocks[0].mlp
        for w in (a.q.weight, a.k.weight, a.v.weight):
            w[:16] = 0
        a.o.weight[:, :16] = 0
        m.fc.weight[:64] = 0
        m.proj.weight[:, :64] = 0
    tcfg = TrainConfig(steps=steps, lr=3e-3, warmup=5, log_every=5)
    opt = build_optimizer(model, tcfg)
    loop = L.Lyactl(model, opt, None, interval=2, block=64)
    section = ControllerSection(interval=2, block=64, budget=None, warmup_frac=0.0, last_frac=1.0, window=3, lag=1,
                                guard=GuardConfig(window=3, pre_window=3), hysteresis=2, cooldown_steps=10,
                                min_steps_between_events=0, guard_exact_events=guard_all)
    loop.controller = build_controller(section, steps, loop.backend.groups(), loop.backend.constraints())
    tokens = np.random.default_rng(0).integers(0, 64, 4000)
    return model, opt, loop, Batches(tokens, 16, 4, 0), tcfg


def summary(res, loop, model) -> dict[str, Any]:
    """What must be identical between a resumed and an uninterrupted run (JSON-ready)."""
    from lyactl.control.decision_log import event_to_json

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    record = [{k: v for k, v in r.items() if k != "seconds"} for r in loop.backend.record]
    ctl = loop.controller.state_dict()  # its statistics window holds dw_sq etc. of the last reports
    ctl["window"].pop("head")  # the ring's start index: a loaded window starts at 0 (same content)
    return {"losses": res.losses, "events": [event_to_json(e) for e in loop.events], "record": record,
            "controller": ctl,
            "tokens": res.tokens, "train_flops": res.train_flops, "weights_sha256": h.hexdigest()}


def _pause(label: str) -> None:
    print(f"PAUSE {label}", flush=True)
    time.sleep(600)


def _install_faults(args: argparse.Namespace) -> None:
    """Patch the pause / disk-full points asked for (this process only)."""
    import errno

    import lyactl.app.atomic as atomic
    from lyactl_torch.backend import TorchBackend

    if args.pause_in_event:
        rebuild = TorchBackend._rebuild
        TorchBackend._rebuild = lambda self: (_pause("event"), rebuild(self))[1]  # after surgery, before rebuild
    if args.pause_in_write or args.enospc_at:
        real, last = atomic._fsync, {"step": None}  # step of the file fsynced last (for the dir fsync)

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            name = os.path.basename(path)
            kind = "dir" if os.path.isdir(path) else ("payload" if ".pt." in name else "manifest")
            step = args.pause_in_write[0] if args.pause_in_write else args.enospc_at
            if f"run-{int(step):08d}" in name or (kind == "dir" and last["step"] == int(step)):
                if args.enospc_at and kind == "payload":
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                if args.pause_in_write and kind == args.pause_in_write[1]:
                    if kind == "payload":
                        os.ftruncate(fd, os.fstat(fd).st_size // 2)  # only half of it reached the disk
                    _pause(f"write {kind}")
            if kind != "dir":
                last["step"] = int(name.split("-")[1].split(".")[0]) if name.startswith(".run-") else None
            real(fd)

        atomic._fsync = fsync


def worker(args: argparse.Namespace) -> int:
    """Train (or, with --resume, resume every --dir in turn); write the summaries."""
    import torch

    torch.set_num_threads(1)
    _install_faults(args)
    rc = 0
    for folder, out in zip(args.dir, args.out, strict=True):
        rc = max(rc, _train_one(args, Path(folder), Path(out)))
    return rc


def _train_one(args: argparse.Namespace, folder: Path, out: Path) -> int:
    from lyactl.errors import LyactlError
    from lyactl_torch.train import train

    model, opt, loop, batches, tcfg = build()

    def hook(step: int, loss) -> bool:
        if args.pause_at_step is not None and step == args.pause_at_step:
            _pause(f"step {step}")
        return False

    try:
        res = train(model, opt, batches, tcfg, loop=loop, hooks=[hook], checkpoint_dir=folder,
                    checkpoint_every=EVERY, resume=args.resume)
    except LyactlError as exc:
        print(f"CHECKPOINT ERROR: {exc}", file=sys.stderr, flush=True)
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 3
    out.write_text(json.dumps(summary(res, loop, model)))
    return 0


# ---------------------------------------------------------------- the parent
def _spawn(*extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "backends"),
                                                        os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "benchmarks.studies.fault_injection", "worker", *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)


def _run(*extra: str) -> tuple[int, str]:
    p = _spawn(*extra)
    out, err = p.communicate(timeout=300)
    return p.returncode, out + err


def _kill_at(folder: Path, *pause: str) -> str:
    """Run until the worker pauses at ``pause``; SIGKILL it there; return the label."""
    p = _spawn("--dir", str(folder), "--out", str(folder / "never.json"), *pause)
    for line in p.stdout:
        if line.startswith("PAUSE"):
            p.send_signal(signal.SIGKILL)
            p.communicate(timeout=60)
            return line.split(" ", 1)[1].strip()
    rc = p.wait()
    raise RuntimeError(f"worker ended (rc={rc}) without reaching {pause}: {p.stderr.read()[-2000:]}")


def _resume_all(folders: list[Path], parallel: int) -> dict[Path, dict[str, Any]]:
    """Resume every folder (``parallel`` worker processes, each resuming several in turn)."""
    parts = [folders[i::parallel] for i in range(parallel) if folders[i::parallel]]

    def one(part: list[Path]) -> None:
        args = [a for f in part for a in ("--dir", str(f), "--out", str(f / "resumed.json"))]
        _run(*args, "--resume")

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, parts))
    out = {}
    for f in folders:
        done = f / "resumed.json"
        out[f] = json.loads(done.read_text()) if done.is_file() else {"error": "resume crashed"}
    return out


def _damage(folder: Path, how: str) -> str:
    """Damage the newest checkpoint of ``folder``; return what was done."""
    from lyactl_torch.run_state import list_checkpoints

    step, manifest = list_checkpoints(folder)[0]
    payload = folder / json.loads(manifest.read_text())["payload"]
    if how == "flip":
        data = bytearray(payload.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 16):
            data[i] ^= 0xFF
        payload.write_bytes(bytes(data))
    elif how == "truncate":
        payload.write_bytes(payload.read_bytes()[: payload.stat().st_size // 2])
    else:
        manifest.write_text('{"format": "lyactl_torch.run/1", "st')
    return f"{how} {payload.name if how != 'manifest' else manifest.name} (step {step})"


SCENARIOS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("kill before the event (step 5)", ("--pause-at-step", "5"), None),
    ("kill during the event (inside apply)", ("--pause-in-event",), None),
    ("kill right after the event (step 9)", ("--pause-at-step", "9"), None),
    ("kill in the guard window (step 13)", ("--pause-at-step", "13"), None),
    ("kill late (step 21)", ("--pause-at-step", "21"), None),
    ("kill mid payload write (step 9, half written)", ("--pause-in-write", "9", "payload"), None),
    ("kill before the manifest rename (step 12)", ("--pause-in-write", "12", "manifest"), None),
    ("kill after payload rename, no manifest (step 9)", ("--pause-in-write", "9", "dir"), None),
    ("corrupt newest payload (flipped bytes)", ("--pause-at-step", "13"), "flip"),
    ("truncated newest payload", ("--pause-at-step", "13"), "truncate"),
    ("garbled newest manifest", ("--pause-at-step", "13"), "manifest"),
)


def _kill_all(base: Path, parallel: int) -> list[dict[str, Any]]:
    """Run every kill scenario (damaged ones share one killed run, copied)."""
    kills = {pause: base / f"k{i}" for i, pause in enumerate(dict.fromkeys(p for _, p, _ in SCENARIOS))}
    with ThreadPoolExecutor(parallel) as pool:
        labels = dict(zip(kills, pool.map(lambda kv: _kill_at(kv[1], *kv[0]), kills.items())))
    rows = []
    for i, (name, pause, damage) in enumerate(SCENARIOS):
        folder = base / f"s{i}"
        shutil.copytree(kills[pause], folder)
        (folder / "never.json").unlink(missing_ok=True)
        detail = _damage(folder, damage) if damage else ""
        rows.append({"scenario": name, "killed_at": labels[pause], "damage": detail, "folder": folder})
    return rows


def _disk_full(base: Path) -> dict[str, Any]:
    """A checkpoint write fails with ENOSPC: clear error, previous checkpoint intact."""
    from lyactl_torch.run_state import load_run

    folder = base / "enospc"
    rc, text = _run("--dir", str(folder), "--out", str(folder / "never.json"), "--enospc-at", "12")
    clear = rc == 3 and "No space left on device" in text and "run-00000012" in text
    prev = load_run(folder)
    intact = prev is not None and prev.step == 9 and not list(folder.glob(".*.tmp"))
    (folder / "never.json").unlink(missing_ok=True)
    return {"scenario": "disk full at the step-12 checkpoint", "killed_at": "ENOSPC", "folder": folder,
            "damage": f"error reported clearly: {clear}; previous checkpoint intact: {intact}", "ok": clear and intact}


def run_suite(workdir: Path | None = None, parallel: int = 2) -> dict[str, Any]:
    """Run every scenario; return the figures (``data_lost`` must be 0)."""
    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="lyactl-faults-")) if workdir is None else Path(workdir)
    try:
        ref_dir = base / "reference"
        rc, text = _run("--dir", str(ref_dir), "--out", str(base / "reference.json"))
        if rc != 0:
            raise RuntimeError(f"reference run failed: {text[-2000:]}")
        ref = json.loads((base / "reference.json").read_text())
        rows = _kill_all(base, parallel) + [_disk_full(base)]
        resumed = _resume_all([r["folder"] for r in rows], parallel)
        for r in rows:
            got = resumed[r.pop("folder")]
            r["recovered"] = "error" not in got and r.pop("ok", True)
            r["identical"] = got == ref
            r["error"] = got.get("error", "")
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    lost = sum(1 for r in rows if not (r["recovered"] and r["identical"]))
    return {"faults_injected": len(rows), "runs_recovered": sum(1 for r in rows if r["recovered"] and r["identical"]),
            "data_lost": lost, "steps": STEPS, "checkpoint_every": EVERY, "reference_events": len(ref["events"]),
            "seconds": round(time.perf_counter() - t0, 1), "scenarios": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--dir", required=True, action="append")
    w.add_argument("--out", required=True, action="append")
    w.add_argument("--resume", action="store_true")
    w.add_argument("--pause-at-step", type=int)
    w.add_argument("--pause-in-event", action="store_true")
    w.add_argument("--pause-in-write", nargs=2, metavar=("STEP", "KIND"))
    w.add_argument("--enospc-at", type=int)
    args = parser.parse_args(argv)
    if args.cmd == "worker":
        return worker(args)
    figures = run_suite()
    out = ROOT / "benchmarks" / "results" / "fault_injection.json"
    out.write_text(json.dumps(figures, indent=1) + "\n")
    for r in figures["scenarios"]:
        print(f"{'ok ' if r['recovered'] and r['identical'] else 'LOST'} {r['scenario']}: killed at {r['killed_at']}"
              f"{'; ' + r['damage'] if r['damage'] else ''}")
    print(f"faults injected: {figures['faults_injected']}, runs recovered: {figures['runs_recovered']}, "
          f"data lost: {figures['data_lost']}  ({figures['seconds']} s)")
    return 0 if figures["data_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
