"""Times the reference implementation on the harness's saved weights and inputs (run by ``run.py --reference``).

It runs under the reference's own interpreter (the FG-CLIP v1 model code is a fork of transformers 4.32–4.34 and
cannot be imported next to transformers 5), imports the model classes from the checkout, loads the weights that
``run.py`` saved in the released checkpoint layout, and times the cases of ``cases.pt`` with the same timers:

    REF_PYTHON tools/perf/reference.py CHECKOUT WORK_DIR

Nothing of the checkout is copied into this project; it is only put on ``sys.path``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import case_value, measure, measure_grad  # the harness's own timers and cases

# the reference's model classes, by family: (module in the checkout, class name)
REFERENCE_CLASSES = {
    "fgclip": ("fgclip.model.clip_strc.fgclip", "FGCLIPModel"),
    "fgclip2": ("fgclip2.model.strcs.fgclip2", "FG_CLIP2_Model"),
}


def load_reference(checkout: Path, family: str, folder: Path, device: str, dtype: torch.dtype):
    module, name = REFERENCE_CLASSES[family]
    sys.path.insert(0, str(checkout))
    cls = getattr(importlib.import_module(module), name)
    return cls.from_pretrained(str(folder)).to(device, dtype).eval()


def main(checkout: str, work: str) -> int:
    work_dir = Path(work)
    spec = json.loads((work_dir / "cases.json").read_text())
    tensors = torch.load(work_dir / "cases.pt", weights_only=True)
    device, dtype = spec["device"], getattr(torch, spec["dtype"])
    if not torch.distributed.is_initialized():  # the reference's training forward calls dist.get_rank()
        # a group of its own on the harness's free port, whatever launcher variables the caller's environment has
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(spec["port"])
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    results = {}
    models = {}
    for case in spec["cases"]:
        family = case["family"]
        if family not in models:
            models[family] = load_reference(Path(checkout), family, work_dir / family, device, dtype)
        model = models[family]
        kwargs = {k: case_value(v, tensors, device) for k, v in case["kwargs"].items()}
        if case["grad"]:
            model.train()

            def step(model=model, kwargs=kwargs):
                model(**kwargs).loss.backward()
                model.zero_grad(set_to_none=True)

            median, _ = measure_grad(step, spec["step_repeats"])
            model.eval()
        else:
            fn = getattr(model, case["reference_method"])
            median, _ = measure(lambda fn=fn, kwargs=kwargs: fn(**kwargs), spec["min_run_time"])
        results[case["name"]] = median
        print(f"reference {case['name']}: {median:.1f} ms", file=sys.stderr)
    (work_dir / "reference.json").write_text(json.dumps(results, indent=1))
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
