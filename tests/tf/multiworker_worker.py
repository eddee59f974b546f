"""One worker of the multi-worker smoke test: ``python -m tests.tf.multiworker_worker INDEX PORTS DATA OUT``."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    """Train one epoch under MultiWorkerMirroredStrategy and write the resulting weights' checksum."""
    index, ports, data, out = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], sys.argv[4]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})
    from recsys_lib.core.config import TrainConfig
    from recsys_lib.models.data import ItemPrior, training_chunks
    from recsys_lib.models.trainer import fit, worker_position
    from recsys_lib.models.two_tower import weight_arrays
    from tests.tf.helpers import tiny_spec

    spec = tiny_spec()
    prior = ItemPrior.from_counts({i: 1 for i in spec.items})
    seen: list[str] = []

    def make(worker: int, workers: int):  # type: ignore[no-untyped-def]
        base = training_chunks([data], spec, prior, worker=worker, workers=workers)

        def gen():  # type: ignore[no-untyped-def]
            for chunk in base():
                seen.extend(chunk["item_id"].tolist())
                yield chunk
        return gen

    result = fit(spec, make, 256, TrainConfig(strategy="multi_worker", batch_size=32, epochs=2, shuffle_buffer=16))
    weights = weight_arrays(result.model)
    with open(out, "w") as fh:
        json.dump({"position": list(worker_position()), "loss": result.epochs[-1]["loss"],
                   "checksum": float(sum(abs(w).sum() for w in weights.values())), "rows_read": len(seen)}, fh)


if __name__ == "__main__":
    main()
