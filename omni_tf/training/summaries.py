"""TensorBoard scalars under ``<workdir>/tb`` and a one-line progress report with rate and ETA.

Only the chief writes summaries; every process may print progress (the loop prints on the chief only).
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# tf.summary.scalar needs the tensorboard package; tf.summary.write with the scalars plugin's metadata
# writes the same event without it.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()

TB_SUBDIR = "tb"


def format_duration(seconds: float) -> str:
    """``3725.4 -> '1:02:05'``; negative or non-finite -> ``'?'``."""
    if not seconds >= 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def eta_seconds(step: int, total: int, steps_per_s: float, trained_s: float = 0.0,
                budget_s: float = 0.0) -> tuple[float, str]:
    """``(seconds left, limit)`` until the first of the run's limits: ``total - step`` steps at the recent
    rate ``steps_per_s`` ("max_steps"), or the rest of a time budget ``budget_s > 0`` after ``trained_s``
    seconds ("max_minutes"). ``(nan, "")`` when neither is known (no rate yet, no budget)."""
    by_steps = (total - step) / steps_per_s if steps_per_s > 0 else float("inf")
    by_time = max(budget_s - trained_s, 0.0) if budget_s > 0 else float("inf")
    if by_steps == by_time == float("inf"):
        return float("nan"), ""
    return (by_steps, "max_steps") if by_steps <= by_time else (by_time, "max_minutes")


def progress_line(step: int, total: int, loss: float, lr: float, steps_per_s: float, utts_per_s: float,
                  elapsed_s: float, budget_s: float = 0.0, progress: float | None = None) -> str:
    """``step 120/8000 (1.5%) loss 42.1000 lr 1.20e-04 2.31 steps/s 36.9 utts/s elapsed 0:00:52 ETA 0:56:51
    (max_steps)``.

    ``steps_per_s`` is the recent rate (the loop leaves the first step's tracing and feature-cache build out
    of it); ``elapsed_s`` the training time so far; the ETA is that of whichever limit comes first
    (``eta_seconds``). The percentage is the training ``progress`` that drives the schedules when given
    (``omni_tf.training.progress``), else ``step / total``.
    """
    frac = progress if progress is not None else (step / total if total else 0.0)
    eta, limit = eta_seconds(step, total, steps_per_s, elapsed_s, budget_s)
    return (f"step {step}/{total} ({100 * frac:.1f}%) loss {loss:.4f} lr {lr:.2e} {steps_per_s:.2f} steps/s "
            f"{utts_per_s:.1f} utts/s elapsed {format_duration(elapsed_s)} ETA {format_duration(eta)}"
            + (f" ({limit})" if limit else ""))


class RateMeter:
    """Steps, utterances and frames per second since the last ``reset`` (wall clock)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self._t0 = self._clock()
        self.steps = self.utts = self.frames = 0

    def add(self, steps: int, utts: int, frames: int = 0) -> None:
        self.steps, self.utts, self.frames = self.steps + steps, self.utts + utts, self.frames + frames

    def rates(self) -> dict[str, float]:
        dt = max(self._clock() - self._t0, 1e-9)
        return {"steps_per_s": self.steps / dt, "utts_per_s": self.utts / dt,
                "frames_per_s": self.frames / dt}


class SummaryWriter:
    """Scalar summaries; a no-op writer on non-chief workers."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.logdir = os.path.join(workdir, TB_SUBDIR)
        self._writer = (tf.summary.create_file_writer(self.logdir) if enabled
                        else tf.summary.create_noop_writer())

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(float(value), tf.float32), metadata=_SCALAR_METADATA)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def kernel_sparsity_scalars(report: Mapping[str, float], prefix: str = "sparsity/") -> dict[str, float]:
    """Per-kernel mask sparsities (``SupernetMasks.sparsity_report()``) plus their mean, as scalar names."""
    out = {prefix + name: v for name, v in report.items()}
    if report:
        out[prefix + "mean"] = sum(report.values()) / len(report)
    return out
