"""Scale-out benchmark: a Llama-style reference GPT trained with lyactl under FSDP2 or plain.

``python -m torch.distributed.run --nproc_per_node=N -m benchmarks.scale.run --preset h200-1b``
(see :mod:`benchmarks.scale.run`).
"""

__all__: list[str] = []
