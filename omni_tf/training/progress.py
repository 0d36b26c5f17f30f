"""Training progress: the one clock every schedule reads (learning rate, sparsity ramp, dense warm-up).

A run is bounded by ``max_steps`` and, optionally, a wall-clock budget ``max_minutes``. Its *schedule step*

    schedule_step = min(max_steps, max(step, floor(max_steps * seconds / (60 * max_minutes))))

is the number of steps the run would have done by now at the pace that ends both budgets together; its
*progress* is ``schedule_step / max_steps`` in [0, 1]. Without a time budget (or when the steps run out
first) the schedule step is the step, so schedules behave exactly as step schedules. When the time budget
binds (a slower machine) the schedule step runs ahead of the step, so the learning rate reaches the end of its
decay and the sparsity masks freeze at the same *fraction* of the budget on any machine, and the sparse
levels are fine-tuned in the budget's last part.

``seconds`` is the time spent in the training loop, summed over every invocation (resumes included), so a
resumed run continues its clock instead of getting a fresh budget. ``TrainingProgress`` holds the schedule
step and the seconds as variables saved in the checkpoint, and every schedule is a pure function of the
schedule step: a restored checkpoint gives the same learning rate and sparsity targets it was saved with.
With a time budget the schedule step depends on the machine's speed, so two runs are not bit-identical
(they are with ``max_minutes = 0``).
"""
from __future__ import annotations

import math

import tensorflow as tf


def schedule_step(step: int, max_steps: int, seconds: float, max_minutes: float) -> int:
    """The schedule step after ``step`` steps and ``seconds`` seconds of training (see module docstring).

    Raises ValueError for ``max_steps < 1``, a negative step, seconds or budget.
    """
    if max_steps < 1 or step < 0 or seconds < 0 or max_minutes < 0:
        raise ValueError(f"bad progress inputs: step={step} max_steps={max_steps} seconds={seconds} "
                         f"max_minutes={max_minutes}")
    by_time = math.floor(max_steps * seconds / (60.0 * max_minutes)) if max_minutes > 0 else 0
    return min(int(max_steps), max(int(step), int(by_time)))


def progress(step: int, max_steps: int, seconds: float, max_minutes: float) -> float:
    """``schedule_step / max_steps`` in [0, 1]: the fraction of the run done, by steps or by time."""
    return schedule_step(step, max_steps, seconds, max_minutes) / max_steps


class TrainingProgress(tf.Module):
    """Checkpointed clock: ``schedule_step`` (int64) and ``seconds`` trained (float64, all invocations).

    Create it under the strategy scope; ``update`` runs in cross-replica context (the loop), and the
    learning-rate schedule reads ``schedule_step`` inside the train step.
    """

    def __init__(self, max_steps: int, max_minutes: float = 0.0, name: str = "progress"):
        super().__init__(name=name)
        if max_steps < 1 or max_minutes < 0:
            raise ValueError(f"TrainingProgress: max_steps must be >= 1 and max_minutes >= 0, got "
                             f"{max_steps}, {max_minutes}")
        self.max_steps, self.max_minutes = int(max_steps), float(max_minutes)
        agg = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.schedule_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="schedule_step",
                                         aggregation=agg)
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds", aggregation=agg)

    def update(self, step: int, seconds: float) -> int:
        """Records ``seconds`` trained in total and returns the new schedule step (never decreasing)."""
        new = max(schedule_step(step, self.max_steps, seconds, self.max_minutes),
                  int(self.schedule_step.numpy()))
        self.seconds.assign(float(seconds))
        self.schedule_step.assign(new)
        return new

    @property
    def value(self) -> float:
        """Progress in [0, 1]."""
        return int(self.schedule_step.numpy()) / self.max_steps

    def done(self, step: int) -> str | None:
        """``"max_steps"`` or ``"max_minutes"`` once that budget is used up, else None."""
        if step >= self.max_steps:
            return "max_steps"
        if self.max_minutes > 0 and float(self.seconds.numpy()) >= 60.0 * self.max_minutes:
            return "max_minutes"
        return None
