"""GPT pretraining benchmark: dense vs lyactl vs the dense frontier and the sceptic's baselines.

One command reproduces a benchmark (``--preset h200`` on a GPU machine; ``--preset tiny``
runs the same code on CPU in seconds, as the tests do)::

    python -m benchmarks.pretrain run --preset h200 --data ../shared/data --devices 0,1,2,3 \\
        --out runs/pretrain --name pretrain_h200

Stages: stage 1 runs "dense", "lyactl", "freeze" and the "frontier" sizes; stage 2 the arms
derived from lyactl's seed-0 run ("lyactl-arch-scratch", "small-dense", "dense-short",
"random", "magnitude", "taylor"); ``--stage all`` runs both (dependencies are respected).
Every job writes ``<out>/<id>.json``; ``merge`` gathers them into
``benchmarks/results/<name>.json`` in the schema of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.pretrain.arms import PRESETS, plan, with_warmup  # noqa: E402
from benchmarks.pretrain.orchestrate import run_jobs  # noqa: E402

__all__ = ["main"]


def _prepare(corpus: Path, preset: dict, work: Path) -> Path:
    """Tokenize the split once (train stream and validation documents) into ``work``."""
    import numpy as np
    from tokenizers import Tokenizer

    from lyactl_torch.corpus import encode_documents, load_documents, split_documents, train_bpe

    meta_path = work / "meta.json"
    if meta_path.exists():
        return work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    docs = load_documents(corpus, preset["sources"])
    split = split_documents(docs, preset["val_fraction"], preset["split_seed"])
    tok_path = preset["tokenizer"] or train_bpe([d.text for d in split.train], preset["vocab"], work / "tokenizer.json")
    tok = Tokenizer.from_file(str(tok_path))
    np.save(work / "train.npy", encode_documents(tok, split.train).astype(np.uint16))
    val = [{"src": d.src, "text": d.text, "index": d.index, "line": d.line} for d in split.val]
    (work / "val.json").write_text(json.dumps(val))
    rec = split.record() | {"tokenizer": str(tok_path), "prepare_s": time.perf_counter() - t0}
    meta_path.write_text(json.dumps(rec))
    return work


def cmd_run(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    work = _prepare(args.corpus or args.data / "corpus", preset, args.out / "work")
    planned = plan(preset, args.stage, work=str(work), data=str(args.data), out=str(args.out))
    jobs = planned
    if args.only:
        keep = set(args.only.split(","))
        jobs = [j for j in planned if j["id"] in keep or j["arm"] in keep]
    if args.bench:
        jobs = [{"id": "bench-surgery", "arm": "bench", "script": "bench_surgery_gpu",
                 "args": ["--out", str(args.out / "surgery_h200.json")], "cost": 95.0, "needs": []}] + jobs
    devices = args.devices.split(",")
    for p in args.out.glob("warm-*.json"):  # the cache they warmed may be gone (a fresh machine)
        p.unlink()
    # done over the whole plan: a job picked by --only may need one outside the pick
    done = {j["id"] for j in planned + jobs if (args.out / f"{j['id']}.json").exists()}
    todo = with_warmup([j for j in jobs if j["id"] not in done])
    status = run_jobs(todo, devices, args.out, timeout_s=args.timeout, done=done, min_start_s=args.min_start)
    print(json.dumps(status, indent=1))
    if not args.no_merge:
        cmd_merge(argparse.Namespace(out=args.out, name=args.name, results=args.results, preset=args.preset))
    return 0 if all(s == "done" for s in status.values()) else 1


def cmd_job(args: argparse.Namespace) -> int:
    spec = json.loads(Path(args.spec).read_text())
    if spec.get("script"):  # a side benchmark sharing the machine's queue (one GPU)
        import importlib

        rc = importlib.import_module(spec["script"]).main(spec["args"])
        result = {"id": spec["id"], "arm": "bench", "rc": rc}
    else:
        from benchmarks.pretrain.job import run_job

        result = run_job(spec, Path(args.out))
        if spec.get("warmed"):  # its starting shape was compiled by a warm-up job first
            result["warmed"] = True
        if spec.get("gpu_shared_by", 1) > 1:  # wall-clock measured with other jobs on the same GPU
            result["gpu_shared_by"] = spec["gpu_shared_by"]
    (Path(args.out) / f"{spec['id']}.json").write_text(json.dumps(result))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from benchmarks.pretrain.report import merge

    merged = merge(Path(args.out), args.name, args.preset)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{args.name}.json"
    path.write_text(json.dumps(merged, indent=1))
    print(f"wrote {path} ({len(merged['arms'])} arm runs)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="prepare data, run the jobs of a stage, merge")
    run.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    run.add_argument("--stage", choices=["1", "2", "all"], default="all")
    run.add_argument("--data", type=Path, default=Path("../shared/data"))
    run.add_argument("--corpus", type=Path, default=None, help="corpus folder (default DATA/corpus)")
    run.add_argument("--devices", default="cpu", help="comma-separated CUDA device ids, or 'cpu'")
    run.add_argument("--out", type=Path, default=Path("runs/pretrain"))
    run.add_argument("--name", default="pretrain")
    run.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    run.add_argument("--only", default="", help="comma-separated job ids or arm names")
    run.add_argument("--timeout", type=float, default=3600.0)
    run.add_argument("--min-start", type=float, default=0.0,
                     help="start no job with fewer seconds than this left before --timeout")
    run.add_argument("--bench", action="store_true", help="also run bench_surgery_gpu.py in the queue")
    run.add_argument("--no-merge", action="store_true",
                     help="leave the merge (a minute of bootstrap on a large run) to a separate `merge`")
    run.set_defaults(fn=cmd_run)
    job = sub.add_parser("job", help="run one job spec (used by the orchestrator)")
    job.add_argument("spec")
    job.add_argument("--out", required=True)
    job.set_defaults(fn=cmd_job)
    mrg = sub.add_parser("merge", help="gather job results into one results file")
    mrg.add_argument("--out", type=Path, default=Path("runs/pretrain"))
    mrg.add_argument("--name", default="pretrain")
    mrg.add_argument("--preset", choices=sorted(PRESETS), default="h200")
    mrg.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    mrg.set_defaults(fn=cmd_merge)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
