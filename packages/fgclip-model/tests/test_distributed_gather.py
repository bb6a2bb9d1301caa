"""The cross-rank gather of the contrastive losses: rows of every rank in rank order, gradients back to their
rank — also when the ranks hold different numbers of rows (a batch that lost a corrupt sample)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgclip_model.distributed import gather_with_grad

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from dist_uneven_gather import rows_of  # noqa: E402

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_process_group_is_identity():
    x = torch.randn(3, 4)
    rows, offset = gather_with_grad(x)
    assert rows is x and offset == 0


@pytest.mark.slow  # two processes under torchrun
def test_uneven_batches_gather_in_rank_order_with_gradients(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            str(HERE / "dist_uneven_gather.py"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = torch.cat([rows_of(0), rows_of(1)])  # 2 + 3 rows, no padding rows left in
    weights = torch.arange(expected.numel(), dtype=torch.float32).reshape(expected.shape)
    for rank, offset in ((0, 0), (1, 2)):
        seen = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(seen["gathered"], expected, rtol=0, atol=0)
        assert seen["offset"] == offset
        # d/d local of sum over ranks of (gathered * weights): each rank's rows get their weights once per rank
        n = rank + 2
        torch.testing.assert_close(seen["grad"], 2 * weights[offset : offset + n], rtol=0, atol=0)
