"""Bazel entry point for the pytest files: `py_test(main = "bazel_pytest_main.py", args = [<test file>])`.

Runs pytest on the given files from the runfiles tree and exits with pytest's status. The cache plugin is off
(the tree may be read-only) and "no tests collected" (exit 5) counts as a failure.
"""
import os
import sys

import pytest


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: bazel_pytest_main.py <tests/test_*.py> [pytest args]", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = [*argv, "-q", "-p", "no:cacheprovider"]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    code = pytest.main(args)
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print(f"bazel_pytest_main: no tests collected from {argv}", file=sys.stderr)
        return 1
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
