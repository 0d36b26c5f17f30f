"""The Bazel BUILD files declare what their Python imports: every first-party module a package's sources
import (top level or inside a function) is in the runfiles of its targets, through the package's own
``deps`` or theirs (Python rules have no strict deps). Parsed statically: Bazel itself is not run."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_PARTY = ("omni_tf", "recipes", "tflite_export", "benchmarks", "tests")
# Packages whose BUILD lists its deps by hand (omni_tf's subpackages are wired by omni_tf/BUILD's macro).
CHECKED = ("benchmarks", "recipes", "recipes/synthetic", "recipes/librispeech", "tflite_export", "tests")
_LABEL = re.compile(r'"//([A-Za-z0-9_/]*)(?::[A-Za-z0-9_]+)?"')


def _packages() -> set[str]:
    """Directories (relative, ``/``-separated) that hold a BUILD file, outside the venv and third_party."""
    out = set()
    for top in FIRST_PARTY:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "__"))]
            if "BUILD" in filenames:
                out.add(os.path.relpath(dirpath, ROOT).replace(os.sep, "/"))
    return out


def _deps(package: str) -> set[str]:
    """The packages named by ``//pkg`` / ``//pkg:target`` labels in ``package``'s BUILD (load()s and
    visibility excluded), with omni_tf/BUILD's ``"//omni_tf/%s" % p for p in _SUBPACKAGES`` expanded."""
    with open(os.path.join(ROOT, package, "BUILD"), encoding="utf-8") as f:
        text = f.read()
    out = {m.group(1) for m in _LABEL.finditer(text)} - {"", "visibility"}
    listed = re.search(r"_SUBPACKAGES = \[([^\]]*)\]", text)
    template = re.search(r'"//([A-Za-z0-9_/]+)/%s" % p for p in _SUBPACKAGES', text)
    if listed and template:
        out |= {f"{template.group(1)}/{p}" for p in re.findall(r'"([A-Za-z0-9_]+)"', listed.group(1))}
    return out


def _closure(package: str) -> set[str]:
    """``package`` and every package its BUILD's labels reach."""
    seen, todo = set(), [package]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += _deps(p)
    return seen


def _imported_packages(package: str, packages: set[str]) -> dict[str, str]:
    """``{Bazel package: "file: module"}`` of the first-party modules the ``*.py`` of ``package`` import:
    a module belongs to the deepest package directory that holds it."""
    out = {}
    for name in sorted(os.listdir(os.path.join(ROOT, package))):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(ROOT, package, name), encoding="utf-8") as f:
            tree = ast.parse(f.read(), name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] not in FIRST_PARTY:
                    continue
                owner = max(("/".join(parts[:n]) for n in range(1, len(parts) + 1)
                             if "/".join(parts[:n]) in packages), key=len, default=None)
                if owner is not None:
                    out.setdefault(owner, f"{package}/{name}: {module}")
    return out


def test_the_closure_follows_labels():
    assert "recipes" in _closure("recipes/synthetic") and "omni_tf/training" in _closure("tflite_export")


@pytest.mark.parametrize("package", CHECKED)
def test_build_deps_cover_the_imports(package):
    packages = _packages()
    reached = _closure(package)
    missing = {p: where for p, where in _imported_packages(package, packages).items() if p not in reached}
    assert not missing, f"{package}/BUILD lacks deps on " + "; ".join(
        f"//{p} (imported by {where})" for p, where in sorted(missing.items()))
