"""Resumable recipe stages: a stage runs once per set of inputs and is reused on the next run.

A stage writes ``<out>/stages/<name>.started.json`` (its key) when it starts and ``<out>/stages/<name>.json``
(its key, inputs, budget and result) only after it finished, so a run that was interrupted redoes the
unfinished stage (which itself may resume, e.g. training from its checkpoint) and reuses every finished one.
The key is a hash of the stage's ``inputs`` and of the stage before it, so the caller passes only what
changes the result: no absolute paths (a copy of ``<out>`` at another path reuses everything), no logging or
checkpoint cadence, no time or step budget.

A finished stage runs again without starting over when ``continue_if(record)`` says so (training whose budget
was raised continues from its checkpoint). A stage whose inputs changed (since it finished, or since a run
of it was interrupted) starts over: its ``outputs`` folders are never deleted but moved aside to
``<folder>.replaced-<time>`` (logged).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from omni_tf import fileio


def _key(inputs: Any) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def move_aside(path: str) -> str | None:
    """Renames ``path`` to a free ``<path>.replaced-<YYYYmmdd-HHMMSS>``; returns it (None if absent)."""
    if not os.path.exists(path):
        return None
    base = f"{path.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = base, 1
    while os.path.exists(target):
        target, n = f"{base}.{n}", n + 1
    try:
        os.rename(path, target)
    except OSError as e:
        raise fileio.named_error(e, path) from e
    return target


class Stages:
    """Runs named stages in order under ``out_dir``; ``log`` gets one line per stage start/reuse/finish."""

    def __init__(self, out_dir: str, log: Callable[[str], None] = print):
        self.dir = os.path.join(out_dir, "stages")
        os.makedirs(self.dir, exist_ok=True)
        self.log = log
        self._upstream = ""  # what the previous stage produced: a redone stage invalidates the later ones
        self.timings: dict[str, float] = {}  # seconds each stage took when it ran (reused: as recorded)

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.json")

    def record(self, name: str) -> dict | None:
        """The stored record of a finished stage (key, inputs, budget, result, seconds, finished), or None."""
        try:
            with open(self._path(name), encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise fileio.IncompleteOutput(f"{self._path(name)}: unreadable stage record ({e})") from e

    def run(self, name: str, inputs: Mapping[str, Any], fn: Callable[[], Any], outputs: tuple[str, ...] = (),
            budget: Mapping[str, Any] | None = None,
            continue_if: Callable[[dict], bool] | None = None) -> Any:
        """``fn()``'s JSON-able result; the stored one is reused when ``inputs`` (and upstream) match.

        ``outputs``: folders the stage resumes from (e.g. a training workdir). They are kept when the stage
        was interrupted with the same inputs (``<name>.started.json`` holds the key of a run that did not
        finish: it resumes) or continues (``continue_if(stored record)`` is true, e.g. a raised ``budget``),
        and moved aside when the finished or interrupted run had other inputs (it starts over).
        """
        fileio.check_name(name, "stage name")
        key = _key({"inputs": inputs, "upstream": self._upstream})
        path, started = self._path(name), self._path(f"{name}.started")
        done = self.record(name)
        if done is not None and done.get("key") == key:
            if continue_if is None or not continue_if(done):
                self.log(f"[{name}] reused (finished {done.get('finished')}, {done.get('seconds', 0):.0f} s)")
                self._upstream = _key({"key": key, "budget": done.get("budget")})
                self.timings[name] = float(done.get("seconds", 0.0))
                return done["result"]
            self.log(f"[{name}] budget {done.get('budget')} -> {dict(budget or {})}: continuing")
        else:
            interrupted = self.record(f"{name}.started")
            if (done or interrupted or {"key": key}).get("key") != key:
                what = "inputs changed" if done is not None else "interrupted run had other inputs"
                self.log(f"[{name}] {what}: redoing")
                if done is not None:
                    os.remove(path)
                for out in outputs:
                    moved = move_aside(out)
                    if moved:
                        self.log(f"[{name}] moved the previous {out} aside to {moved} (delete it if unused)")
        fileio.write_text(started, json.dumps({"key": key, "inputs": inputs}, indent=1, default=str))
        self.log(f"[{name}] running")
        start = time.time()
        result = fn()
        seconds = time.time() - start
        record = {"key": key, "inputs": inputs, "budget": dict(budget) if budget is not None else None,
                  "result": result, "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        fileio.write_text(path, json.dumps(record, indent=1, default=str))
        os.remove(started)
        self.log(f"[{name}] done in {seconds:.0f} s")
        self._upstream = _key({"key": key, "budget": record["budget"]})
        self.timings[name] = seconds
        return result
