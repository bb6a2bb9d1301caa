"""fgclip_model.machine: every results file records the CPU it came from, and a run held to AVX2 says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys

KEYS = {"model", "flags", "hardware_class", "effective_class", "torch_cpu_capability", "env", "threads", "cores",
        "torch", "load_average_start"}  # fmt: skip


def _load():
    import fgclip_model.machine

    return fgclip_model.machine


def _record_in_subprocess(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    code = "import json; from fgclip_model.machine import cpu_record; print(json.dumps(cpu_record()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env},
                          timeout=120, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_record_has_the_keys_and_the_line_names_the_model():
    cpu = _load()
    record = cpu.cpu_record()
    assert set(record) >= KEYS
    assert set(record["flags"]) == set(cpu.FLAGS)
    assert record["hardware_class"] in cpu.CLASSES and record["effective_class"] in cpu.CLASSES
    assert record["threads"] >= 1 and len(record["load_average_start"]) == 3
    line = cpu.cpu_line(record)
    assert line.startswith("CPU: ") and record["model"] and record["model"] in line
    assert f"{record['threads']} threads" in line
    json.dumps(record)  # goes into the results' .json as it is


def test_aten_cpu_capability_avx2_holds_the_effective_class():
    free = _record_in_subprocess()
    held = _record_in_subprocess(ATEN_CPU_CAPABILITY="avx2")
    assert held["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert held["hardware_class"] == free["hardware_class"]
    if free["flags"]["avx2"]:
        assert held["torch_cpu_capability"] == "AVX2"  # torch's own view agrees
        assert held["effective_class"] == "avx2"
    else:
        assert held["effective_class"] == "baseline"
    if free["hardware_class"] != held["effective_class"]:
        assert "held to AVX2-only (ATEN_CPU_CAPABILITY=avx2" in _load().cpu_line(held)


def test_classes_from_flags_and_holds():
    cpu = _load()
    amx = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
    assert cpu.hardware_class(amx) == "amx"
    assert cpu.hardware_class(amx - {"amx_tile", "amx_bf16"}) == "avx512_bf16"
    assert cpu.hardware_class({"avx2", "avx512f"}) == "avx512"
    assert cpu.hardware_class({"avx2", "fma"}) == "avx2"
    assert cpu.effective_class("amx", {}, "AVX512") == "amx"
    assert cpu.effective_class("amx", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX512") == "avx2"
    assert cpu.effective_class("amx", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "AVX512") == "avx512_bf16"
    assert cpu.effective_class("avx512_bf16", {"ONEDNN_MAX_CPU_ISA": "ALL"}, "AVX512") == "avx512_bf16"
    assert cpu.effective_class("avx2", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "AVX2") == "avx2"
    assert cpu.cpu_line({"unknown": "measured before CPUs were recorded"}).startswith("CPU: unknown")
