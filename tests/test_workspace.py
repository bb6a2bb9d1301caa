"""The workspace contract: five independently built packages, a light inference wheel, declared CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "fgclip-model": [],
    "fgclip-data": [],
    "fgclip-train": ["fgclip-model", "fgclip-data"],
    "fgclip-eval": ["fgclip-model", "fgclip-data"],
    "fgclip-longclip": ["fgclip-model", "fgclip-data", "fgclip-train"],
}
HEAVY = ("deepspeed", "img2dataset", "pyarrow", "mmseg", "mmcv")


def _pyproject(name: str) -> dict:
    return tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())


def _run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, **kwargs)


@pytest.mark.parametrize("name", PACKAGES)
def test_member_layout(name):
    folder = ROOT / "packages" / name
    module = name.replace("-", "_")
    meta = _pyproject(name)
    assert meta["build-system"]["build-backend"] == "hatchling.build"
    assert (folder / "README.md").is_file() and (folder / "LICENSE").is_file()
    assert (folder / "src" / module / "py.typed").is_file()
    assert (folder / "src" / module / "__init__.py").is_file()
    # each sibling dependency carries a version range and resolves from the workspace
    deps = meta["project"].get("dependencies", [])
    for sibling in PACKAGES[name]:
        spec = next(d for d in deps if d.startswith(sibling))
        assert ">=" in spec and "<" in spec, spec
        assert meta["tool"]["uv"]["sources"][sibling] == {"workspace": True}
    declared = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in deps}
    assert declared & set(PACKAGES) == set(PACKAGES[name])


@pytest.mark.slow  # builds every wheel and installs one in a fresh venv
def test_uv_build_gives_five_wheels_and_the_model_wheel_installs_alone(tmp_path):
    dist = tmp_path / "dist"
    build = _run("uv", "build", "--all-packages", "--out-dir", str(dist), "--quiet")
    assert build.returncode == 0, build.stderr
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == sorted(n.replace("-", "_") for n in PACKAGES)
    assert all("-0.1.0-" in w for w in wheels)

    # versions pinned from uv.lock, so the fresh venv matches what the workspace tested
    constraints = tmp_path / "constraints.txt"
    export = _run(
        "uv",
        "export",
        "--package",
        "fgclip-model",
        "--no-hashes",
        "--no-emit-workspace",
        "--frozen",
        "--quiet",
        "-o",
        str(constraints),
    )
    assert export.returncode == 0, export.stderr
    venv = tmp_path / "venv"
    assert _run("uv", "venv", "--quiet", "--python", sys.executable, str(venv)).returncode == 0
    python = venv / "bin" / "python"
    wheel = next(dist.glob("fgclip_model-*.whl"))
    install = _run("uv", "pip", "install", "--quiet", "--python", str(python), "-c", str(constraints), str(wheel))
    assert install.returncode == 0, install.stderr
    probe = (
        "import importlib.util as u, fgclip_model; "
        f"print(fgclip_model.__version__, [m for m in {HEAVY!r} if u.find_spec(m)])"
    )
    out = _run(str(python), "-c", probe)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.1.0", "[]"]


@pytest.mark.parametrize("command", ["stage2", "fgclip-data", "benchmark", "finetune"])
def test_commands_have_help(command):
    exe = Path(sys.executable).parent / command
    assert exe.exists(), f"{command} entry point is not installed"
    helped = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and f"usage: {command}" in helped.stdout and "NOT IMPLEMENTED" not in helped.stdout
