"""Run by tests/jobs/test_synthesize.py under torchrun: synthesize digits blends with the process group's timeout at
10 s, counting the source images each process encodes; ``SLEEP`` seconds: rank 0 stalls that long before writing
its first shard (a long shard while the other process has nothing left). Each process writes ``encoded-<rank>.json``
beside the output.

    python -m torch.distributed.run --nproc_per_node 2 synthesize_ranks.py OUT SLEEP
"""

import datetime
import json
import sys
import time
from pathlib import Path

import torch.distributed as dist

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=10))  # accelerate keeps a group it finds
rank = dist.get_rank()

import latentmix.jobs.synthesize as synthesis  # noqa: E402
from latentmix.backends.base import LatentBackend  # noqa: E402
from latentmix.configs import SynthesisConfig  # noqa: E402

encoded: list[int] = []
real_encode, real_write = LatentBackend.encode, synthesis.write_shard


def counting_encode(self, images, *args, **kwargs):
    encoded.append(int(images.shape[0]))
    return real_encode(self, images, *args, **kwargs)


def stalling_write(*args, **kwargs):
    if rank == 0 and not stalled:
        stalled.append(True)
        time.sleep(float(sys.argv[2]))
    return real_write(*args, **kwargs)


stalled: list[bool] = []
LatentBackend.encode = counting_encode  # type: ignore[method-assign]
synthesis.write_shard = stalling_write  # type: ignore[assignment]
out = Path(sys.argv[1])
config = SynthesisConfig(backend="digits-vae", n=40, shard_size=16, strategy="inter-class", out=str(out))
result = synthesis.synthesize(config, quiet=True)
(out.parent / f"encoded-{rank}.json").write_text(json.dumps({"encoded": sum(encoded), "n": result.num_samples}))
