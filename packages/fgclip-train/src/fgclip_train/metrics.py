"""Run logging: a progress bar with the loss terms, lr and samples/s; a JSONL file; TensorBoard and W&B."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm


class MetricsLogger:
    """Rank 0 writes ``metrics.jsonl`` (one object per logged step or evaluation) and shows the bar."""

    def __init__(
        self,
        output_dir: str | Path,
        total: int,
        start: int,
        main: bool,
        tensorboard=False,
        wandb=False,
        config: dict | None = None,
        desc: str = "stage2",
    ) -> None:
        self.main = main
        self.path = Path(output_dir) / "metrics.jsonl"
        self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True, disable=not main)
        self.tb = self.run = None
        if main and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        if main and wandb:
            import wandb as wb

            self.run = wb.init(project="fgclip", config=config, dir=str(output_dir))
        self.last = time.perf_counter()
        self.samples = 0

    def write(self, record: dict) -> None:
        if not self.main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record.get("step", 0)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.run:
            self.run.log(scalars, step=step)

    def step(self, step: int, losses: dict[str, float], lr: float, extra: dict | None = None) -> None:
        """Log a step; samples/s covers every sample counted with :meth:`advance` since the last log."""
        now = time.perf_counter()
        rate = self.samples / max(1e-9, now - self.last)
        self.last, self.samples = now, 0
        record = {"step": step, **losses, "lr": lr, "samples_per_s": rate, **(extra or {})}
        self.write(record)
        shown = {k.removeprefix("loss_"): f"{v:.3f}" for k, v in losses.items()}
        self.bar.set_postfix(**shown, lr=f"{lr:.2e}", sps=f"{rate:.0f}")

    def advance(self, samples: int) -> None:
        self.bar.update(1)
        self.samples += samples

    def close(self) -> None:
        self.bar.close()
        if self.tb:
            self.tb.close()
        if self.run:
            self.run.finish()
