"""Exit 0 iff the running interpreter satisfies a requirements file: versions match and the packages import.

Usage: .venv/bin/python scripts/check_requirements.py requirements.txt
Used by scripts/setup.sh to accept an existing venv without running pip. Prints what is wrong to stdout,
one per line.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tensorflow-model-optimization imports only with tf_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pip._vendor.packaging.requirements import InvalidRequirement, Requirement  # noqa: E402


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(path: str) -> list[Requirement]:
    """Requirement lines of `path` (comments and blank lines skipped); pip options are an error."""
    reqs = []
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("-"):
                raise ValueError(f"{path}:{lineno}: pip options are not supported here: {line!r}")
            try:
                reqs.append(Requirement(line))
            except InvalidRequirement as e:
                raise ValueError(f"{path}:{lineno}: {e}") from e
    return reqs


def problems(reqs: list[Requirement]) -> list[str]:
    """Missing or mismatched distributions, then top-level modules that fail to import."""
    out = []
    modules_of: dict[str, list[str]] = {}
    for module, dists in md.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(_norm(dist), []).append(module)
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            out.append(f"{req.name}: not installed")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append(f"{req.name}: {version} installed, requirements.txt wants {req.specifier}")
            continue
        modules = sorted(m for m in modules_of.get(_norm(req.name), []) if m.isidentifier() and m[0] != "_")
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as e:  # any import failure means the venv is not usable
                out.append(f"{req.name}: 'import {module}' fails: {type(e).__name__}: {e}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        found = problems(parse(argv[0]))
    except ValueError as e:
        print(f"check_requirements: {e}", file=sys.stderr)
        return 2
    for line in found:
        print(f"check_requirements: {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
