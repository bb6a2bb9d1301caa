"""Run by test_distributed.py under ``torchrun --nproc_per_node 2``: only rank 0 has an empty batch; every rank
must learn it (``any_rank``), or the ranks that go on would wait in the next gather for ever.

Usage: python dist_any_rank.py OUT_DIR
"""

from __future__ import annotations

import sys

import torch.distributed as dist

from fgclip_train.engine import setup_distributed
from fgclip_train.loop import any_rank


def main(out: str) -> None:
    env = setup_distributed()
    seen = [any_rank(env.rank == 0, env), any_rank(False, env)]
    with open(f"{out}/rank{env.rank}.txt", "w") as f:
        f.write(" ".join(map(str, seen)))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
