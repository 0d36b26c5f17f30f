"""RNN-T loss benchmark: forward+backward time and extra peak memory vs the log-softmax floor (CPU).

For each (B, T, U, V) it times ``omni_tf.losses.rnnt.rnnt_loss`` forward+backward (reduction "sum", full
lengths) and, interleaved in the same process, ``tf.nn.log_softmax`` forward+backward over the same logits
(the "floor": any loss must at least normalize the logits and write a gradient of their size). Peak memory is
measured per (shape, function) in a fresh subprocess: VmHWM minus VmRSS after the inputs exist and the runtime
is warm, reported as a multiple of the logits' bytes.

The torchaudio columns: ``torchaudio.functional.rnnt_loss`` (fused log-softmax, blank 0) forward+backward on
the same inputs, run by this file in a fresh process of ``--torch_python`` (default: this interpreter), which
needs ``torch`` and a ``torchaudio`` that still has ``functional.rnnt_loss`` (deprecated in 2.8, present in
2.9.x; e.g. ``python -m venv tv && tv/bin/pip install torch==2.9.1 torchaudio==2.9.1 numpy``, a multi-GB
download). Without them the columns read n/a and a message says how to get them. The loss itself is checked
against a float64 numpy reference in ``tests/test_rnnt.py``.

Usage:
  .venv/bin/python benchmarks/rnnt_loss.py                          # 3 default shapes, 2 threads, 5 runs
  .venv/bin/python benchmarks/rnnt_loss.py --shapes 8,100,20,256 --runs 3 --no-anchor
  .venv/bin/python benchmarks/rnnt_loss.py --torch_python=tv/bin/python   # torchaudio from another venv
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_SHAPES = ["8,100,20,256", "8,200,40,512", "16,150,30,1024"]
TORCHAUDIO_HINT = ("pip install torch==2.9.1 torchaudio==2.9.1 numpy (here, or in another venv passed "
                   "as --torch_python; torchaudio.functional.rnnt_loss is deprecated, gone in newer ones)")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")


def _build(threads: int):
    sys.path.insert(0, REPO)
    import tensorflow as tf

    import omni_tf  # noqa: F401  (legacy Keras env before TensorFlow)
    from omni_tf.losses.rnnt import rnnt_loss

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    spec = [tf.TensorSpec([None] * 4, tf.float32)]
    int_specs = [tf.TensorSpec([None, None], tf.int32)] + [tf.TensorSpec([None], tf.int32)] * 2

    @tf.function(input_signature=spec + int_specs)
    def loss_step(x, labels, logit_lengths, label_lengths):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = rnnt_loss(x, labels, logit_lengths, label_lengths, reduction="sum")
        return loss, tape.gradient(loss, x)

    @tf.function(input_signature=spec * 2)
    def floor_step(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            log_probs = tf.nn.log_softmax(x)
        return log_probs, tape.gradient(log_probs, x, output_gradients=upstream)

    return tf, loss_step, floor_step


def _draws(b: int, t: int, u: int, v: int, seed: int = 1234):
    """numpy logits [B, T, U+1, V], labels [B, U] in [1, V), upstream gradient [B, T, U+1, V]; the TF and the
    torchaudio runs use the same draws, so their summed losses are comparable."""
    import numpy as np

    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((b, t, u + 1, v), dtype=np.float32)
    labels = rng.integers(1, v, size=(b, u), dtype=np.int32)
    upstream = rng.standard_normal((b, t, u + 1, v), dtype=np.float32)
    return logits, labels, upstream


def _inputs(tf, b: int, t: int, u: int, v: int, seed: int = 1234):
    logits, labels, upstream = _draws(b, t, u, v, seed)
    lengths = (tf.fill([b], t), tf.fill([b], u))
    return tf.constant(logits), tf.constant(labels), lengths, tf.constant(upstream)


def run_single(shape: tuple[int, int, int, int], which: str, runs: int, threads: int) -> dict:
    """In a fresh process: extra peak memory of `which` (loss|floor); for `loss` also interleaved timings."""
    tf, loss_step, floor_step = _build(threads)
    tiny_logits, tiny_labels, tiny_lengths, tiny_up = _inputs(tf, 2, 4, 2, 8)
    loss_step(tiny_logits, tiny_labels, *tiny_lengths)  # trace + warm the runtime outside the measurement
    floor_step(tiny_logits, tiny_up)
    logits, labels, lengths, upstream = _inputs(tf, *shape)

    def loss_call():
        return loss_step(logits, labels, *lengths)

    def floor_call():
        return floor_step(logits, upstream)

    fn = loss_call if which == "loss" else floor_call
    base_kb = _status_kb("VmRSS")
    _reset_peak_rss()
    out = fn()
    peak_kb = _status_kb("VmHWM")
    del out
    result = dict(shape=",".join(map(str, shape)), which=which, extra_peak_mb=(peak_kb - base_kb) / 1024.0,
                  logits_mb=logits.shape.num_elements() * 4 / 2**20)
    if which == "loss":
        floor_call()  # warm-up of the other function
        times = {"loss": [], "floor": []}
        for _ in range(runs):
            for name, call in (("floor", floor_call), ("loss", loss_call)):
                t0 = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t0) * 1e3)
        result.update(loss_ms=statistics.median(times["loss"]), floor_ms=statistics.median(times["floor"]),
                      loss_value=float(loss_call()[0]))
    return result


def _subprocess(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"benchmarks/rnnt_loss.py {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_torchaudio_single(shape: tuple[int, int, int, int], runs: int, threads: int) -> dict:
    """In a fresh process of a torch interpreter: torchaudio forward+backward median time and peak RSS."""
    import numpy as np
    import torch
    import torchaudio.functional as F

    torch.set_num_threads(threads)
    b, t, u, v = shape
    logits_np, labels_np, _ = _draws(b, t, u, v)
    labels = torch.from_numpy(labels_np)
    lengths = (torch.full((b,), t, dtype=torch.int32), torch.full((b,), u, dtype=torch.int32))

    def call():
        x = torch.from_numpy(logits_np).requires_grad_(True)
        loss = F.rnnt_loss(x, labels, *lengths, blank=0, reduction="sum")
        loss.backward()
        return float(loss)

    rss_inputs_kb = _status_kb("VmRSS")  # before the first call: includes torchaudio's own warm-up
    times = []
    for i in range(runs + 1):  # the first run is the warm-up
        t0 = time.perf_counter()
        loss = call()
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
    return dict(shape=",".join(map(str, shape)), fwdbwd_ms=statistics.median(times), loss=loss,
                rss_inputs_mb=rss_inputs_kb / 1024.0, peak_rss_mb=_status_kb("VmHWM") / 1024.0,
                torch=torch.__version__, numpy=np.__version__)


def run_anchor(shapes: list[str], runs: int, threads: int, python: str) -> dict[str, dict]:
    """torchaudio rows by shape, each from a fresh ``python`` process; {} and a message without torchaudio."""
    probe = subprocess.run([python, "-c", "import numpy, torch, torchaudio.functional as F; F.rnnt_loss"],
                           capture_output=True, text=True)
    if probe.returncode:
        reason = (probe.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"torchaudio columns n/a: {python} cannot use torchaudio.functional.rnnt_loss ({reason}); "
              f"to fill them: {TORCHAUDIO_HINT}", file=sys.stderr)
        return {}
    rows = {}
    for s in shapes:
        cmd = [python, "-W", "ignore", os.path.abspath(__file__), "--runs", str(runs),
               "--threads", str(threads), "--_torchaudio", s]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"benchmarks/rnnt_loss.py --_torchaudio {s} failed:\n{proc.stderr[-3000:]}")
        rows[s] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rows


def table(rows: list[dict], anchor: dict[str, dict]) -> str:
    lines = [
        "| B,T,U,V | logits MB | floor ms | loss ms | loss / floor | torchaudio ms | floor extra peak "
        "| loss extra peak | torchaudio extra peak | loss rel. diff vs torchaudio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = anchor.get(r["shape"])
        mb = r["logits_mb"]
        a_ms = f"{a['fwdbwd_ms']:.0f}" if a else "n/a"
        a_mem = f"{(a['peak_rss_mb'] - a['rss_inputs_mb']) / mb:.2f}x" if a else "n/a"
        a_diff = f"{abs(r['loss_value'] - a['loss']) / abs(a['loss']):.1e}" if a else "n/a"
        lines.append(
            f"| {r['shape']} | {mb:.0f} | {r['floor_ms']:.1f} | {r['loss_ms']:.1f} | "
            f"{r['loss_ms'] / r['floor_ms']:.2f} | {a_ms} | {r['floor_extra_mb'] / mb:.2f}x | "
            f"{r['loss_extra_mb'] / mb:.2f}x | {a_mem} | {a_diff} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="B,T,U,V ...")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per function (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-anchor", action="store_true", help="skip the torchaudio columns")
    ap.add_argument("--torch_python", default=sys.executable,
                    help="interpreter with torch + torchaudio for the torchaudio columns (default: this one)")
    ap.add_argument("--_single", nargs=2, metavar=("SHAPE", "WHICH"), help=argparse.SUPPRESS)
    ap.add_argument("--_torchaudio", metavar="SHAPE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._torchaudio:
        shape = tuple(int(x) for x in a._torchaudio.split(","))
        print(json.dumps(run_torchaudio_single(shape, a.runs, a.threads)))
        return
    if a._single:
        shape = tuple(int(x) for x in a._single[0].split(","))
        print(json.dumps(run_single(shape, a._single[1], a.runs, a.threads)))
        return
    rows = []
    for s in a.shapes:
        common = ["--runs", str(a.runs), "--threads", str(a.threads), "--_single", s]
        loss = _subprocess(common + ["loss"])
        floor = _subprocess(common + ["floor"])
        rows.append(dict(loss, loss_extra_mb=loss["extra_peak_mb"], floor_extra_mb=floor["extra_peak_mb"]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    anchor = {} if a.no_anchor else run_anchor(a.shapes, a.runs, a.threads, a.torch_python)
    print(f"threads={a.threads}, median of {a.runs} interleaved runs after warm-up, float32, CPU; "
          "extra peak = (VmHWM - VmRSS with inputs) / logits bytes, one fresh process per shape and function")
    print(table(rows, anchor))


if __name__ == "__main__":
    main()
