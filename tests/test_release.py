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


@pytest.mark.slow  # builds, publishes to a local index and installs in a fresh venv
def test_release_to_a_local_index_and_install_from_it(index, tmp_path, golden):
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(".venv", "dist", "runs", ".git", "__pycache__", ".pytest_cache", ".ruff_cache"),
    )
    published = []
    for name in ("fgclip-model", "fgclip-data"):
        result = release.release(
            name, "patch", index, root=repo, publish_url=index, username="fgclip", password="secret"
        )
        assert result["version"] == "0.1.1" and result["published"] and result["tag"] is None  # one publisher
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
        release.release("fgclip-model", "patch", None, root=repo, publish_url=index, username="u", password="p")


@pytest.mark.slow  # dry-run builds of several packages
def test_tag_is_on_the_bump_commit_and_dependents_dry_run_before_their_siblings_are_published(tmp_path, monkeypatch):
    """The default flow commits the bump and tags that commit (the workflow publishes it); a dependent whose new
    sibling version is on no index yet still dry-runs, its siblings installed from wheels built on the spot."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv", "dist", "runs", ".git", "__pycache__"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "base"], check=True)
    for variable in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(variable, "t")
    for variable in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(variable, "t@example.invalid")
    result = release.release("fgclip-data", "minor", None, root=repo)
    assert result["tag"] == "fgclip-data-v0.2.0" and not result["published"]
    assert result["next"].startswith("git push origin fgclip-data-v0.2.0")
    tagged = subprocess.run(
        [*git, "show", "fgclip-data-v0.2.0:packages/fgclip-data/src/fgclip_data/__about__.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '__version__ = "0.2.0"' in tagged  # the tag points at the bump, not at the old version
    log = subprocess.run([*git, "log", "--format=%s", "-1"], capture_output=True, text=True, check=True).stdout
    assert log.strip() == "release: fgclip-data 0.2.0"
    assert '"fgclip-data>=0.2,<0.3"' in (repo / "packages" / "fgclip-train" / "pyproject.toml").read_text()
    # fgclip-data 0.2.0 is on no index: the dependent's smoke install takes it from the wheel built here
    dry = release.release("fgclip-train", "patch", None, root=repo, dry_run=True)
    assert dry["version"] == "0.1.1" and Path(dry["wheel"]).is_file() and dry["tag"] is None


@pytest.mark.slow  # builds and checks a wheel from a copy of the repository
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
