"""Versions and releases: sibling ranges, declared imports, and the whole release path against a real package
index (pypiserver on 127.0.0.1)."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("release", ROOT / "tools" / "release.py")
release = importlib.util.module_from_spec(spec)
spec.loader.exec_module(release)


def test_sibling_ranges_admit_the_current_versions():
    folders = release.packages(ROOT)
    for name, folder in folders.items():
        content = (folder / "pyproject.toml").read_text()
        for sibling, sibling_folder in folders.items():
            requirement = release.sibling_requirement(content, sibling)
            if sibling != name and requirement is not None:
                assert release.range_admits(requirement, release.read_version(sibling_folder)), (name, sibling)


def test_packages_import_only_declared_siblings():
    folders = release.packages(ROOT)
    modules = {name.replace("-", "_"): name for name in folders}
    for name, folder in folders.items():
        content = (folder / "pyproject.toml").read_text()
        declared = {s for s in folders if release.sibling_requirement(content, s) is not None} | {name}
        for file in (folder / "src").rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for imported in names:
                    top = imported.split(".")[0]
                    if top in modules:
                        assert modules[top] in declared, f"{file} imports {top} but {name} does not declare it"


@pytest.mark.parametrize(
    ("version", "part", "expected", "compatible"),
    [
        ((0, 1, 0), "patch", (0, 1, 1), ">=0.1,<0.2"),
        ((0, 1, 3), "minor", (0, 2, 0), ">=0.2,<0.3"),
        ((1, 4, 2), "major", (2, 0, 0), ">=2.0,<3"),
    ],
)
def test_bumps_and_ranges(version, part, expected, compatible):
    assert release.bump(version, part) == expected
    assert release.compatible_range(expected) == compatible
    assert release.range_admits(compatible, expected)
    assert not release.range_admits(">=0.1,<0.2", (0, 2, 0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def index(tmp_path):
    """pypiserver on 127.0.0.1 with upload authentication (user fgclip / password secret)."""
    from passlib.apache import HtpasswdFile

    htpasswd = HtpasswdFile(str(tmp_path / "htpasswd"), new=True)
    htpasswd.set_password("fgclip", "secret")
    htpasswd.save()
    (tmp_path / "index").mkdir()
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pypiserver",
            "run",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-P",
            str(tmp_path / "htpasswd"),
            "-a",
            "update",
            "--disable-fallback",
            str(tmp_path / "index"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/simple/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(10)


def test_release_to_a_local_index_and_install_from_it(index, tmp_path, golden):
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(".venv", "dist", "runs", ".git", "__pycache__", ".pytest_cache", ".ruff_cache"),
    )
    published = []
    for name in ("fgclip-model", "fgclip-data"):
        result = release.release(name, "patch", index, root=repo, username="fgclip", password="secret", tag=False)
        assert result["version"] == "0.1.1" and result["published"]
        published.append(result)
    # the bump rewrote nothing else: 0.1.1 is inside every dependent's >=0.1,<0.2
    assert all(not r["dependents_to_release"] for r in published)
    assert "## 0.1.1 — " in (repo / "packages" / "fgclip-model" / "CHANGELOG.md").read_text()
    with urllib.request.urlopen(f"{index}/simple/fgclip-model/") as page:
        listing = page.read().decode()
    assert "fgclip_model-0.1.1-py3-none-any.whl" in listing and "fgclip_model-0.1.1.tar.gz" in listing

    venv, constraints = tmp_path / "venv", tmp_path / "constraints.txt"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    subprocess.run(
        [
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
        ],
        cwd=ROOT,
        check=True,
        env=env,
    )
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    subprocess.run(
        [
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "--extra-index-url",
            f"{index}/simple/",
            "-c",
            str(constraints),
            "fgclip-model==0.1.1",
        ],
        check=True,
        env=env,
    )
    probe = (
        "import torch, fgclip_model; from safetensors.torch import load_file; "
        f"io = load_file('{golden}/v1_s0/io.safetensors'); "
        f"m = fgclip_model.FGCLIPModel.from_pretrained('{golden}/v1_s0/model').eval(); "
        "torch.testing.assert_close(m.get_image_features(io['pixel_values']), io['image_embeds'], atol=2e-5, "
        "rtol=1e-4); print(fgclip_model.__version__)"
    )
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "0.1.1"

    # the same version twice is refused with a clear message
    about = release.about_file(repo / "packages" / "fgclip-model")
    about.write_text(about.read_text().replace("0.1.1", "0.1.0"))
    with pytest.raises(release.ReleaseError, match=r"0\.1\.1 is already on"):
        release.release("fgclip-model", "patch", index, root=repo, username="fgclip", password="secret", tag=False)


def test_dry_run_builds_checks_and_restores(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv", "dist", "runs", ".git", "__pycache__"))
    before = release.read_version(repo / "packages" / "fgclip-data")
    result = release.release("fgclip-data", "minor", None, root=repo, dry_run=True)
    assert result["version"] == "0.2.0" and not result["published"]
    assert sorted(result["dependents_to_release"]) == ["fgclip-eval", "fgclip-longclip", "fgclip-train"]
    assert Path(result["wheel"]).is_file()
    assert release.read_version(repo / "packages" / "fgclip-data") == before  # files restored
    assert '"fgclip-data>=0.1,<0.2"' in (repo / "packages" / "fgclip-train" / "pyproject.toml").read_text()
