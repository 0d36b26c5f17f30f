"""Resumable recipe stages: a stage runs once per set of inputs and is reused on the next run.

A stage writes ``<out>/stages/<name>.json`` (its inputs and its result) only after it finished, so a run that
was interrupted redoes the unfinished stage (which itself may resume, e.g. training from its checkpoint) and
reuses every finished one. Changing the inputs of a stage (flags that matter to it) redoes it and all after.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any


def _key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """Runs named stages in order under ``out_dir``; ``log`` gets one line per stage start/reuse/finish."""

    def __init__(self, out_dir: str, log: Callable[[str], None] = print):
        self.dir = os.path.join(out_dir, "stages")
        os.makedirs(self.dir, exist_ok=True)
        self.log = log
        self._upstream = ""  # key of the previous stage: a redone stage invalidates the later ones
        self.timings: dict[str, float] = {}  # seconds each stage took when it ran (reused: as recorded)

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.json")

    def run(self, name: str, inputs: dict[str, Any], fn: Callable[[], Any], outputs: tuple[str, ...] = ()
            ) -> Any:
        """``fn()``'s JSON-able result; the stored one is reused when ``inputs`` (and upstream) match.

        ``outputs``: directories the stage resumes from (e.g. a training workdir). They are kept when the
        stage was interrupted (no record: it resumes) and removed when its inputs changed (it starts over).
        """
        key = _key({"inputs": inputs, "upstream": self._upstream})
        path = self._path(name)
        if os.path.exists(path):
            with open(path) as f:
                done = json.load(f)
            if done.get("key") == key:
                self.log(f"[{name}] reused (finished {done.get('finished')}, {done.get('seconds', 0):.0f} s)")
                self._upstream = key
                self.timings[name] = float(done.get("seconds", 0.0))
                return done["result"]
            removing = f" (removing {', '.join(outputs)})" if outputs else ""
            self.log(f"[{name}] inputs changed: redoing{removing}")
            os.remove(path)
            for out in outputs:
                shutil.rmtree(out, ignore_errors=True)
        self.log(f"[{name}] running")
        start = time.time()
        result = fn()
        seconds = time.time() - start
        record = {"key": key, "inputs": inputs, "result": result, "seconds": seconds,
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1, default=str)
        os.replace(tmp, path)
        self.log(f"[{name}] done in {seconds:.0f} s")
        self._upstream = key
        self.timings[name] = seconds
        return result
