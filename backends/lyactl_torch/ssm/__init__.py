"""State-space layers for the torch backend: the scan (:mod:`.scan`), the LRU (:mod:`.lru`)
and real-diagonal (:mod:`.s4d`) layers, an SSM language model (:mod:`.lm`) and in-training
state truncation with certificates and the optimizer state carried over (:mod:`.truncate`)."""

__all__: list[str] = []
