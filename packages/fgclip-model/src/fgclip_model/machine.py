"""Which CPU a measurement came from: one record for every results file (``stage2``'s and ``benchmark``'s
``results.json``, every file of ``tools/perf``).

``cpu_record()`` gives the model name, the instruction-set flags that decide the speed of the towers (AVX2 / FMA,
AVX-512, AVX512-BF16 and VNNI, AMX), the environment variables that hold PyTorch and oneDNN below what the
hardware has, torch's own view of its kernels (``torch.backends.cpu.get_cpu_capability()``), and from all of these
the *effective* class the run computed in; with threads, cores, the torch version and the load average at the
start. ``cpu_line(record)`` is the one human line the ``.md`` outputs begin with.

A machine with AVX-512 measures as an AVX2-only one with::

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 stage2 ...

(the first holds PyTorch's own vectorised kernels, the second oneDNN — bf16 matmuls, convolutions, inductor's
packed weights — the third MKL, which the x86 wheels use for float32 matmuls).
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
HOLDS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")

# instruction-set classes, lowest first; the effective class is the lowest that the hardware and every hold allow
CLASSES = ("baseline", "avx2", "avx512", "avx512_bf16", "amx")
CLASS_NAMES = {
    "baseline": "no AVX2",
    "avx2": "AVX2-only",
    "avx512": "AVX-512 (no BF16)",
    "avx512_bf16": "AVX512-BF16 (no AMX)",
    "amx": "AMX",
}


def hardware_class(flags: set[str] | list[str]) -> str:
    """The highest class the CPU's flags support."""
    flags = set(flags)
    if {"amx_tile", "amx_bf16"} <= flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "baseline"


def _aten_cap(value: str) -> str | None:
    """The class ``ATEN_CPU_CAPABILITY`` (or torch's reported capability) allows; None: no limit below AVX-512."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("avx512"):
        return None  # PyTorch's AVX512 kernels; bf16 / AMX matmuls are oneDNN's, held by its own variable
    return "avx2" if value.startswith("avx2") else "baseline"


def onednn_cap(value: str) -> str | None:
    """The class ``ONEDNN_MAX_CPU_ISA`` allows (oneDNN's names: SSE41, AVX, AVX2, AVX2_VNNI, AVX512_CORE,
    AVX512_CORE_VNNI, AVX512_CORE_BF16, AVX512_CORE_FP16, AVX512_CORE_AMX, ..., ALL)."""
    value = value.strip().upper()
    if not value or value in ("ALL", "DEFAULT"):
        return None
    if "AMX" in value:
        return "amx"
    if value.startswith(("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10")):
        return "avx512_bf16"
    if value.startswith("AVX512"):
        return "avx512"
    return "avx2" if value.startswith("AVX2") else "baseline"


def _mkl_cap(value: str) -> str | None:
    """The class ``MKL_ENABLE_INSTRUCTIONS`` allows (SSE4_2, AVX, AVX2, AVX512, AVX512_E1, ...)."""
    value = value.strip().upper()
    if not value:
        return None
    if value.startswith("AVX512"):
        return None
    return "avx2" if value.startswith("AVX2") else "baseline"


CAPS = {
    "ATEN_CPU_CAPABILITY": _aten_cap,
    "ONEDNN_MAX_CPU_ISA": onednn_cap,
    "DNNL_MAX_CPU_ISA": onednn_cap,
    "MKL_ENABLE_INSTRUCTIONS": _mkl_cap,
}


def effective_class(hardware: str, env: dict[str, str], torch_capability: str | None) -> str:
    """The lowest of the hardware's class, each hold in ``env`` and torch's reported capability."""
    limits = [hardware]
    limits += [CAPS[name](value) for name, value in env.items() if name in CAPS]
    if torch_capability:
        limits.append(_aten_cap(torch_capability))
    return min((c for c in limits if c), key=CLASSES.index)


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    if not model:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
            names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
            model = names[0] if names else ""
        except OSError:
            pass
    return model or platform.processor() or platform.machine(), flags


def cpu_record() -> dict:
    """The CPU this process measures on: model, flags, hardware and effective class, holds, threads, load."""
    import torch

    model, flags = _cpuinfo()
    hardware = hardware_class(flags)
    env = {name: os.environ[name] for name in HOLDS if os.environ.get(name)}
    capability = torch.backends.cpu.get_cpu_capability()
    sees = {  # what torch's CPUID probes report (the holds do not change them; fgclip's native_bf16 reads these)
        "avx512_bf16": getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: None)(),
        "amx_tile": getattr(torch.cpu, "_is_amx_tile_supported", lambda: None)(),
    }
    return {
        "model": model,
        "machine": platform.machine(),
        "flags": {f: f in flags for f in FLAGS},
        "hardware_class": hardware,
        "effective_class": effective_class(hardware, env, capability),
        "torch_cpu_capability": capability,
        "torch_sees": sees,
        "env": {name: os.environ.get(name) for name in HOLDS},
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def class_text(record: dict) -> str:
    """The class in words: "AVX512-BF16 (no AMX)", or "held to AVX2-only (has AVX512-BF16 (no AMX))"."""
    if "effective_class" not in record:  # a result from before CPUs were recorded: what is known of it
        known = record.get("hardware_class")
        return CLASS_NAMES[known] if known in CLASS_NAMES else record.get("class", "instruction set not recorded")
    effective, hardware = record["effective_class"], record.get("hardware_class", record["effective_class"])
    if effective == hardware:
        return CLASS_NAMES[effective]
    holds = ", ".join(f"{k}={v}" for k, v in record.get("env", {}).items() if v)
    return f"held to {CLASS_NAMES[effective]} ({holds}; the CPU has {CLASS_NAMES[hardware]})"


def cpu_line(record: dict) -> str:
    """One line for the top of a ``.md`` result: "CPU: AMD EPYC, AVX512-BF16 (no AMX), 2 threads (2 cores), ..."."""
    if "unknown" in record and "model" not in record:
        return f"CPU: unknown ({record['unknown']})"
    parts = [record.get("model", "model not recorded"), class_text(record)]
    if record.get("threads") is not None:
        cores = f" ({record['cores']} cores)" if record.get("cores") else ""
        parts.append(f"{record['threads']} threads{cores}")
    if record.get("torch_cpu_capability"):
        parts.append(f"torch {record.get('torch', '?')} kernels {record['torch_cpu_capability']}")
    if record.get("load_average_start"):
        parts.append("load average at start " + ", ".join(f"{v:.1f}" for v in record["load_average_start"]))
    if record.get("source"):
        parts.append(f"source: {record['source']}")
    return "CPU: " + ", ".join(parts)


def machine_record() -> dict:
    """:func:`cpu_record`, plus the GPU's name when CUDA is available (what a run's ``results.json`` keeps)."""
    import torch

    record = cpu_record()
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name()
    return record


if __name__ == "__main__":
    import json

    record = cpu_record()
    print(cpu_line(record))
    print(json.dumps(record, indent=1))
