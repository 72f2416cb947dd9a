"""lyactl's benchmarks, one package (run from the repository root with ``python -m``).

* :mod:`benchmarks.pretrain`: the from-scratch pretraining harness on the H200s (arms, jobs
  through the runner's controller construction, the GPU orchestrator, merging and the
  results page): ``python -m benchmarks.pretrain run --preset tiny|h200 ...``;
* :mod:`benchmarks.ssm`: state-space layers, certified truncation against the small state
  from scratch and modal selections: ``python -m benchmarks.ssm.run ...``;
* :mod:`benchmarks.micro`: micro-benchmarks (controller, statistics dispatch, surgery on a
  GPU, ``verify`` and ``rate`` timings);
* :mod:`benchmarks.studies`: one-off studies (the CPU regime, the demo's regime, evaluation
  sanity checks, fault injection, agreement with lm-eval).

Every script writes JSON to ``benchmarks/results/``; speed targets are checked here, never by
timed assertions in tests.
"""
