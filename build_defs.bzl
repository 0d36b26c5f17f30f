"""Macros for the per-package BUILD files: one library per package, one py_binary per script."""

def omni_subpackage(name):
    """``py_library`` of an ``omni_tf/<name>/`` package: its modules plus data files (e.g. resources/)."""
    native.py_library(
        name = name,
        srcs = native.glob(["**/*.py"]),
        data = native.glob(
            ["**/*"],
            exclude = ["**/*.py", "**/*.pyc", "**/__pycache__/**", "BUILD"],
        ),
        deps = ["//omni_tf:init"],
    )

def scripts_package(name, deps):
    """``py_library`` of a scripts directory plus one ``py_binary`` per script.

    `bazel run //<dir>:<script> -- <flags>`; the usual way is `.venv/bin/python -m <dir>.<script>` from the
    repository root.
    """
    native.py_library(name = name, srcs = native.glob(["*.py"]), deps = deps)
    for src in native.glob(["*.py"], exclude = ["__init__.py"]):
        native.py_binary(name = src[:-3], srcs = [src], main = src, deps = [":" + name])
