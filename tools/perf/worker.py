"""One side of the harness's comparison with the reference code: a long-lived process that loads one family's
model (fgclip's, or the reference's from a checkout) and runs the cases it is told to, one JSON line at a time.

    PYTHON tools/perf/worker.py ours|reference WORK_DIR FAMILY [CHECKOUT]

It reads ``WORK_DIR/cases.json`` and ``cases.pt`` (written by ``against_reference.py``) and answers on stdout, each
reply a JSON line after ``REPLY`` (so that whatever the model code prints cannot be mistaken for one):

* ``{"op": "run", "case": NAME}``: one warm-up call; saves its output (features, or the step's loss) to
  ``WORK_DIR/out-<side>-<case>.pt`` -> ``{"ok": true}``;
* ``{"op": "time", "case": NAME, "calls": N}``: N timed calls -> ``{"ms": [...]}``;
* ``{"op": "quit"}``.

The reference side runs under the reference's own interpreter (FG-CLIP v1's model code is a fork of transformers
4.3x and cannot be imported next to transformers 5); nothing of the checkout is copied into this project: it is
imported from ``CHECKOUT``, a patched copy the harness made in its temporary folder.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import case_value  # the harness's own case decoding

# each side's model class, by family: (module, class name); the reference's from the checkout
CLASSES = {
    ("reference", "fgclip"): ("fgclip.model.clip_strc.fgclip", "FGCLIPModel"),
    ("reference", "fgclip2"): ("fgclip2.model.strcs.fgclip2", "FG_CLIP2_Model"),
    ("ours", "fgclip"): ("fgclip_model.fgclip", "FGCLIPModel"),
    ("ours", "fgclip2"): ("fgclip_model.fgclip2", "FGCLIP2Model"),
}
# attributes the reference's trainer sets on its model after loading (train_fgclip2.py: --loss_type reduce in
# the stage-2 script, world_size = the number of processes: 1 here)
TRAINER_SETUP = {("reference", "fgclip2"): {"loss_type": "reduce", "world_size": 1}}
# ... and the trainable temperatures it adds (train_fgclip2.py: nn.Parameter(ones * log_scale))
TRAINER_PARAMETERS = {"fgclip2": ("logit_scale_finegraind", "logit_scale_hardneg")}


def load(side: str, family: str, folder: Path, checkout: str | None):
    if checkout:
        sys.path.insert(0, checkout)
    module, name = CLASSES[side, family]
    cls = getattr(importlib.import_module(module), name)
    model = cls.from_pretrained(str(folder)).float().eval()
    for name, value in TRAINER_SETUP.get((side, family), {}).items():
        setattr(model, name, value)
    if side == "reference":  # parameters its trainer adds after loading: at the saved checkpoint's values
        from safetensors.torch import load_file

        saved = load_file(str(folder / "model.safetensors"))
        for name in TRAINER_PARAMETERS.get(family, ()):
            setattr(model, name, torch.nn.Parameter(saved[name].float()))
    return model


def output_of(result) -> torch.Tensor:
    """What both sides are compared on: the features (a tensor, the first of a tuple, a list of per-image
    region tensors concatenated) or a step's loss."""
    loss = getattr(result, "loss", None)
    if loss is not None:
        return loss.detach()
    result = getattr(result, "pooler_output", result)
    if isinstance(result, tuple):  # the reference's get_image_features(need_densefeature=True): (pooled, dense)
        result = result[-1]
    if isinstance(result, list):
        result = torch.cat([r.reshape(-1, r.shape[-1]) for r in result])
    return result.detach().float()


REPLY = "@@perf-worker "


def reply(message: dict) -> None:
    print(REPLY + json.dumps(message), flush=True)


def main(side: str, work: str, family: str, checkout: str | None = None) -> int:
    work_dir = Path(work)
    spec = json.loads((work_dir / "cases.json").read_text())
    torch.set_num_threads(spec["threads"])
    tensors = torch.load(work_dir / "cases.pt", weights_only=True)
    if not torch.distributed.is_initialized():  # the reference's training forward calls dist.get_rank()
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(spec["ports"][side])
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    model = load(side, family, work_dir / family, checkout)
    if side == "ours" and spec.get("ours_backend", "eager") != "eager":  # features through a fast backend
        from fgclip_model.backends import with_backend

        backend = spec["ours_backend"]
        options = {"export_dir": work_dir / "onnx"} if backend == "onnx" else {}
        model = with_backend(model, backend, **options)
    cases = {c["name"]: c for c in spec["cases"] if c["family"] == family}
    calls = {}
    for name, case in cases.items():
        method = getattr(model, case[f"{side}_method"])
        if case[f"{side}_method"] == "compute_loss":  # our stage-2 contract: one typed batch
            from fgclip_data import Stage2Batch

            method = lambda compute=method, **parts: compute(Stage2Batch(**parts))  # noqa: E731
        kwargs = {k: case_value(v, tensors, "cpu") for k, v in case[f"{side}_kwargs"].items()}
        if case["grad"]:

            def call(method=method, kwargs=kwargs):
                model.train()
                out = method(**kwargs)
                out.loss.backward()
                model.zero_grad(set_to_none=True)
                return out

        else:

            def call(method=method, kwargs=kwargs):
                with torch.inference_mode():
                    return method(**kwargs)

        calls[name] = call
    reply({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        call = calls[command["case"]]
        if command["op"] == "run":
            torch.manual_seed(0)
            torch.save(output_of(call()), work_dir / f"out-{side}-{command['case']}.pt")
            reply({"ok": True})
        else:
            times = []
            for _ in range(command["calls"]):
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) * 1e3)
            reply({"ms": times})
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
