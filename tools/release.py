"""Release one fgclip package: bump, changelog, dependents' ranges, build, check, smoke-install, commit, tag.

    python tools/release.py PACKAGE {major,minor,patch} [--index-url URL] [--dry-run]
    python tools/release.py PACKAGE {major,minor,patch} --publish-url URL [--username U --password P]

Each package keeps its version in ``src/<module>/__about__.py`` (what ``hatch version`` reads). Sibling
dependencies carry compatible ranges — ``>=0.Y,<0.(Y+1)`` for 0.x, ``>=X.Y,<(X+1)`` from 1.0 — and a bump that
leaves a dependent's range behind rewrites it and names the dependents that then need a release. The wheel and
sdist are built with ``uv build``, checked with ``twine check`` and ``check-wheel-contents``, and installed alone
in a fresh venv and imported; workspace siblings are installed from wheels built on the spot (``--find-links``),
so a dependent can be checked before its siblings' new versions are on any index.

One publisher per release. By default the bump is committed and the commit tagged ``<package>-v<version>``;
pushing the tag makes the release workflow publish it to PyPI (trusted publishing). With ``--publish-url`` (a
private index) this script uploads with ``uv publish`` and commits the bump but creates no tag, so the workflow
never publishes the same version again. ``--dry-run`` does everything but commit, tag and publish, and restores
the files it changed. ``--index-url`` is checked for an already released version.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION_LINE = re.compile(r'^__version__ = "(\d+)\.(\d+)\.(\d+)"$', re.M)


class ReleaseError(RuntimeError):
    pass


def packages(root: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((root / "packages").iterdir()) if (p / "pyproject.toml").is_file()}


def about_file(folder: Path) -> Path:
    return folder / "src" / folder.name.replace("-", "_") / "__about__.py"


def read_version(folder: Path) -> tuple[int, int, int]:
    match = VERSION_LINE.search(about_file(folder).read_text())
    if not match:
        raise ReleaseError(f'{about_file(folder)} has no __version__ = "X.Y.Z" line')
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def bump(version: tuple[int, int, int], part: str) -> tuple[int, int, int]:
    major, minor, patch = version
    return {"major": (major + 1, 0, 0), "minor": (major, minor + 1, 0), "patch": (major, minor, patch + 1)}[part]


def text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def compatible_range(version: tuple[int, int, int]) -> str:
    major, minor, _ = version
    return f">={major}.{minor},<{major}.{minor + 1}" if major == 0 else f">={major}.{minor},<{major + 1}"


def range_admits(spec: str, version: tuple[int, int, int]) -> bool:
    """Whether a ``>=A.B[.C],<D.E[.F]`` specifier admits ``version`` (the only form the workspace uses)."""

    def parse(v: str) -> tuple[int, ...]:
        parts = tuple(int(x) for x in v.split("."))
        return parts + (0,) * (3 - len(parts))

    ok = True
    for clause in spec.split(","):
        clause = clause.strip()
        if clause.startswith(">="):
            ok &= version >= parse(clause[2:])
        elif clause.startswith("<"):
            ok &= version < parse(clause[1:])
        elif clause:
            raise ReleaseError(f"unsupported version specifier {clause!r}")
    return ok


def sibling_requirement(pyproject: str, name: str) -> str | None:
    match = re.search(rf'"{re.escape(name)}(?:\[[^\]]*\])?([^"]*)"', pyproject)
    return match.group(1) if match else None


def update_dependents(root: Path, name: str, new: tuple[int, int, int]) -> list[str]:
    """Rewrite the ranges that do not admit ``new``; returns the dependents whose range changed."""
    changed = []
    for dep_name, folder in packages(root).items():
        if dep_name == name:
            continue
        file = folder / "pyproject.toml"
        content = file.read_text()
        spec = sibling_requirement(content, name)
        if spec is None or range_admits(spec, new):
            continue
        file.write_text(content.replace(f'"{name}{spec}"', f'"{name}{compatible_range(new)}"'))
        changed.append(dep_name)
    return changed


def add_changelog_heading(folder: Path, version: str) -> None:
    file = folder / "CHANGELOG.md"
    content = file.read_text() if file.is_file() else f"# Changelog of {folder.name}\n"
    heading = f"## {version} — {datetime.date.today().isoformat()}"
    if heading.split(" — ")[0] in content:
        raise ReleaseError(f"{file} already has a {version} section")
    if "## Unreleased" in content:
        content = content.replace("## Unreleased", f"## Unreleased\n\n{heading}", 1)
    else:
        lines = content.splitlines()
        content = "\n".join([lines[0], "", heading, "", "- Release.", *lines[1:]]) + "\n"
    file.write_text(content)


def already_published(index_url: str, name: str, version: str) -> bool:
    url = f"{index_url.rstrip('/')}/simple/{name}/"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return False
        raise
    normalized = name.replace("-", "_")
    return (
        f"{normalized}-{version}-" in page
        or f"{normalized}-{version}.tar.gz" in page
        or f"{name}-{version}.tar.gz" in page
    )


def run(*cmd: str, cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise ReleaseError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def build_siblings(root: Path, name: str, out: Path) -> None:
    """Wheels of every other workspace package at its current (possibly just bumped) version, into ``out``."""
    for sibling in packages(root):
        if sibling != name:
            run("uv", "build", "--package", sibling, "--wheel", "--out-dir", str(out), "--quiet", cwd=root)


def smoke_install(root: Path, wheel: Path, name: str, index_url: str | None) -> None:
    """Install the wheel alone (its dependencies pinned to uv.lock's versions, workspace siblings from wheels built
    here) in a fresh venv and import it."""
    with tempfile.TemporaryDirectory() as tmp:
        siblings = Path(tmp) / "siblings"
        build_siblings(root, name, siblings)
        venv, constraints = Path(tmp) / "venv", Path(tmp) / "constraints.txt"
        run(
            "uv",
            "export",
            "--package",
            name,
            "--no-hashes",
            "--no-emit-workspace",
            "--frozen",
            "--quiet",
            "-o",
            str(constraints),
            cwd=root,
        )
        run("uv", "venv", "--quiet", "--python", sys.executable, str(venv))
        extra = ["--find-links", str(siblings)]
        extra += ["--extra-index-url", f"{index_url.rstrip('/')}/simple/"] if index_url else []
        run(
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            "-c",
            str(constraints),
            *extra,
            str(wheel),
        )
        module = name.replace("-", "_")
        run(str(venv / "bin" / "python"), "-c", f"import {module}; print({module}.__version__)")


def release(
    name: str,
    part: str,
    index_url: str | None,
    root: Path = ROOT,
    publish_url: str | None = None,
    dry_run: bool = False,
    username: str | None = None,
    password: str | None = None,
    tag: bool = True,
) -> dict:
    folders = packages(root)
    if name not in folders:
        raise ReleaseError(f"unknown package {name!r} (packages: {', '.join(folders)})")
    folder = folders[name]
    old = read_version(folder)
    new = bump(old, part)
    version = text(new)
    for index in dict.fromkeys(filter(None, (index_url, publish_url and _index_of(publish_url)))):
        if already_published(index, name, version):
            raise ReleaseError(f"{name} {version} is already on {index}: a version is released once")
    touched = [about_file(folder), folder / "CHANGELOG.md", *(f / "pyproject.toml" for f in folders.values())]
    backup = {p: p.read_text() for p in touched if p.is_file()}
    try:
        about_file(folder).write_text(VERSION_LINE.sub(f'__version__ = "{version}"', about_file(folder).read_text()))
        add_changelog_heading(folder, version)
        dependents = update_dependents(root, name, new)
        dist = root / "dist" / f"{name}-{version}"
        shutil.rmtree(dist, ignore_errors=True)
        run("uv", "build", "--package", name, "--out-dir", str(dist), "--quiet", cwd=root)
        wheel = next(dist.glob("*.whl"))
        sdist = next(dist.glob("*.tar.gz"))
        run("twine", "check", "--strict", str(wheel), str(sdist))
        run("check-wheel-contents", str(wheel))
        smoke_install(root, wheel, name, index_url)
        tag_name = None
        if not dry_run:
            if publish_url:  # this script is the publisher: no tag, or the workflow would publish again
                cmd = ["uv", "publish", "--publish-url", publish_url, str(wheel), str(sdist)]
                if username:
                    cmd += ["--username", username, "--password", password or ""]
                run(*cmd, cwd=root)
            if (root / ".git").exists():
                changed = [str(p.relative_to(root)) for p in touched if p.is_file() and backup.get(p) != p.read_text()]
                run("git", "add", *changed, cwd=root)
                run("git", "commit", "--quiet", "-m", f"release: {name} {version}", cwd=root)
                if tag and not publish_url:  # the release workflow publishes the tagged commit
                    tag_name = f"{name}-v{version}"
                    run("git", "tag", tag_name, cwd=root)
    finally:
        if dry_run:
            for path, content in backup.items():
                path.write_text(content)
    return {
        "package": name,
        "version": version,
        "previous": text(old),
        "dependents_to_release": dependents,
        "wheel": str(wheel),
        "sdist": str(sdist),
        "published": bool(publish_url) and not dry_run,
        "tag": tag_name,
        "next": f"git push origin {tag_name}  # the release workflow publishes it" if tag_name else None,
    }


def _index_of(publish_url: str) -> str:
    """The index root a pypiserver-style upload URL serves (``http://host/`` for ``http://host/`` uploads)."""
    return (
        publish_url.removesuffix("/legacy/").rstrip("/") if "upload.pypi.org" not in publish_url else "https://pypi.org"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="release", description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("part", choices=["major", "minor", "patch"])
    parser.add_argument("--index-url", help="index root whose /simple/ is checked for an existing release")
    parser.add_argument(
        "--publish-url",
        help="upload here with uv publish (a private index) instead of tagging for the PyPI release workflow",
    )
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--dry-run", action="store_true", help="build, check and smoke-install; publish nothing")
    parser.add_argument("--no-tag", action="store_true", help="commit the bump but create no tag")
    args = parser.parse_args(argv)
    try:
        result = release(
            args.package,
            args.part,
            args.index_url,
            publish_url=args.publish_url,
            dry_run=args.dry_run,
            username=args.username,
            password=args.password,
            tag=not args.no_tag,
        )
    except ReleaseError as err:
        print(f"release: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if result["dependents_to_release"]:
        print(f"ranges updated; release next: {', '.join(result['dependents_to_release'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
