"""Model-free tests of the training pieces: LR schedules, progress clock, loss scale, distillation KL,
progress line, summaries."""
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import omni_tf  # noqa: F401
from omni_tf.configs import training as training_config
from omni_tf.training import optim, progress, step, summaries


def _config(**kw):
    c = training_config.get_config()
    c.update(kw)
    return c


def test_cosine_schedule_values():
    """tf_keras CosineDecay with warm-up at the 1-based update index = the former hand-written schedule."""
    s = optim.make_schedule(_config(learning_rate=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1))
    assert isinstance(s, tf_keras.optimizers.schedules.CosineDecay)
    assert float(s(1)) == pytest.approx(1e-4)  # first update: 1/10 of peak
    assert float(s(10)) == pytest.approx(1e-3)
    assert float(s(60)) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 0.5)), rel=1e-5)
    assert float(s(110)) == pytest.approx(1e-4, rel=1e-5)
    assert float(s(500)) == pytest.approx(1e-4, rel=1e-5)


def test_constant_schedule():
    s = optim.make_schedule(_config(learning_rate=2e-3, warmup_steps=4, max_steps=10, decay="constant"))
    assert [round(float(s(k)) / 2e-3, 6) for k in (1, 4, 5, 100)] == [0.25, 1.0, 1.0, 1.0]
    assert float(optim.make_schedule(_config(learning_rate=2e-3, warmup_steps=0, decay="constant"))(1)) \
        == pytest.approx(2e-3)


def test_eden_values():
    s = optim.make_schedule(_config(learning_rate=1e-3, warmup_steps=10, max_steps=1000, decay="eden",
                                    eden_steps=100, eden_progress=0.5))
    assert isinstance(s, optim.Eden)

    def want(k):
        p = k / 1000
        return (1e-3 * ((k**2 + 100**2) / 100**2) ** -0.25 * ((p**2 + 0.25) / 0.25) ** -0.25
                * min(k / 10, 1.0))

    for k in (1, 5, 10, 100, 1000, 5000):
        assert float(s(k)) == pytest.approx(want(k), rel=1e-5), k
    assert float(s(100)) == pytest.approx(1e-3 * 2**-0.25 * (1.04) ** -0.25, rel=1e-5)  # by hand
    no_progress_term = optim.Eden(1e-3, 100, 0, 1000, lr_progress=0.0)
    assert float(no_progress_term(300)) == pytest.approx(1e-3 * 10**-0.25, rel=1e-5)


def test_schedule_errors():
    with pytest.raises(ValueError, match="decay"):
        optim.make_schedule(_config(decay="noam"))
    with pytest.raises(ValueError, match="bad schedule"):
        optim.make_schedule(_config(learning_rate=0.0))
    with pytest.raises(ValueError, match="bad Eden"):
        optim.Eden(1e-3, 0, 10, 100)


def test_schedule_step_is_steps_or_time_whichever_is_ahead():
    assert progress.schedule_step(30, 100, 0.0, 0.0) == 30  # no budget: the step
    assert progress.schedule_step(30, 100, 60.0, 10.0) == 30  # 10% of the time, 30% of the steps
    assert progress.schedule_step(30, 100, 300.0, 10.0) == 50  # a 2x slower machine: time is ahead
    assert progress.schedule_step(30, 100, 900.0, 10.0) == 100  # past the budget: clipped
    assert progress.progress(30, 100, 300.0, 10.0) == 0.5
    with pytest.raises(ValueError, match="bad progress"):
        progress.schedule_step(1, 0, 0.0, 0.0)


def test_optimizer_rate_follows_the_progress_clock_and_resumes_exactly(tmp_path):
    cfg = _config(learning_rate=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, max_minutes=10.0)
    clock = progress.TrainingProgress(cfg.max_steps, cfg.max_minutes)
    rate = optim.ProgressSchedule(optim.make_schedule(cfg), clock)
    assert float(rate(0)) == pytest.approx(1e-4)  # before any step: the first update's rate
    assert clock.update(step=20, seconds=300.0) == 55  # half the time budget used at step 20
    assert float(rate(20)) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 46 / 100)))
    assert float(rate(999)) == float(rate(20))  # the optimizer's iteration count is not read
    assert clock.update(step=21, seconds=10.0) == 55  # never goes back
    assert clock.done(21) is None and clock.done(110) == "max_steps"
    lr = float(rate(21))
    path = tf.train.Checkpoint(progress=clock).save(str(tmp_path / "ckpt"))
    restored = progress.TrainingProgress(cfg.max_steps, cfg.max_minutes)
    tf.train.Checkpoint(progress=restored).restore(path).assert_consumed()
    assert float(optim.ProgressSchedule(optim.make_schedule(cfg), restored)(21)) == lr
    assert float(restored.seconds) == 10.0 and restored.value == 0.5
    clock.update(step=30, seconds=600.0)  # the time budget is used up: the decay has ended
    assert clock.done(30) == "max_minutes" and float(rate(30)) == pytest.approx(1e-4, rel=1e-5)


def test_make_optimizer_loss_scale_and_weight_decay():
    cfg = _config()
    clock = progress.TrainingProgress(cfg.max_steps)
    opt = optim.make_optimizer(cfg, clock, loss_scale=True)
    assert isinstance(opt, tf_keras.mixed_precision.LossScaleOptimizer) and opt.dynamic
    assert isinstance(optim.inner_optimizer(opt), tf_keras.optimizers.Adam)
    assert optim.inner_optimizer(optim.make_optimizer(cfg, clock)).weight_decay == pytest.approx(1e-6)


def test_distillation_kl_reference():
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    student = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    t_len, u_len = np.array([3, 2]), np.array([3, 1])
    got = step.distillation_kl(student, teacher, t_len, u_len).numpy()
    p = np.exp(teacher) / np.exp(teacher).sum(-1, keepdims=True)
    q = np.exp(student) / np.exp(student).sum(-1, keepdims=True)
    kl = (p * (np.log(p) - np.log(q))).sum(-1)
    want = [kl[0, :3, :4].mean(), kl[1, :2, :2].mean()]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.allclose(step.distillation_kl(teacher, teacher, t_len, u_len).numpy(), 0.0, atol=1e-6)


def test_distillation_kl_teacher_gets_no_gradient():
    teacher = tf.Variable(tf.random.normal([1, 2, 2, 3]))
    student = tf.Variable(tf.random.normal([1, 2, 2, 3]))
    with tf.GradientTape() as tape:
        kl = tf.reduce_sum(step.distillation_kl(student, teacher, tf.constant([2]), tf.constant([1])))
    g_student, g_teacher = tape.gradient(kl, [student, teacher])
    assert g_teacher is None and float(tf.reduce_sum(tf.abs(g_student))) > 0


def test_progress_line_and_duration():
    line = summaries.progress_line(100, 400, 12.5, 1e-3, 2.0, 30.0, 50.0)
    assert line == ("step 100/400 (25.0%) loss 12.5000 lr 1.00e-03 2.00 steps/s 30.0 utts/s "
                    "elapsed 0:00:50 ETA 0:02:30 (max_steps)")
    assert summaries.format_duration(3725.4) == "1:02:05"
    assert summaries.format_duration(float("nan")) == "?"
    assert summaries.progress_line(0, 10, 1.0, 1e-3, 0.0, 0.0, 0.0).endswith("ETA ?")


def test_eta_is_the_first_limit_reached():
    # The fresh-demo case: step 50 of 2500 at a recent 2 steps/s, 2 min into a 20-minute budget.
    assert summaries.eta_seconds(50, 2500, 2.0, 120.0, 1200.0) == (1080.0, "max_minutes")
    assert summaries.eta_seconds(50, 2500, 2.5, 120.0, 1200.0) == (980.0, "max_steps")
    # A fast machine: the steps run out first.
    assert summaries.eta_seconds(2000, 2500, 5.0, 600.0, 1200.0) == (100.0, "max_steps")
    assert summaries.eta_seconds(10, 20, 0.0, 30.0, 60.0) == (30.0, "max_minutes")  # no rate yet
    assert summaries.eta_seconds(10, 20, 1.0) == (10.0, "max_steps")  # no budget
    assert summaries.eta_seconds(5, 20, 1.0, 90.0, 60.0) == (0.0, "max_minutes")
    line = summaries.progress_line(50, 2500, 3.0, 1e-3, 2.5, 40.0, 120.0, budget_s=1200.0, progress=0.1)
    assert "(10.0%)" in line and line.endswith("elapsed 0:02:00 ETA 0:16:20 (max_steps)")


def test_rate_meter_with_fake_clock():
    now = [10.0]
    meter = summaries.RateMeter(clock=lambda: now[0])
    meter.add(2, 8, 800)
    now[0] = 14.0
    assert meter.rates() == {"steps_per_s": 0.5, "utts_per_s": 2.0, "frames_per_s": 200.0}


def test_summary_writer_writes_scalars(tmp_path):
    w = summaries.SummaryWriter(str(tmp_path))
    w.scalars(3, summaries.kernel_sparsity_scalars({"a": 0.5, "b": 0.7}))
    w.close()
    files = os.listdir(tmp_path / "tb")
    assert files
    tags = {}
    for event in tf.compat.v1.train.summary_iterator(str(tmp_path / "tb" / files[0])):
        for v in event.summary.value:
            tags[v.tag] = (event.step, float(tf.make_ndarray(v.tensor)), v.metadata.plugin_data.plugin_name)
    assert tags["sparsity/a"] == (3, 0.5, "scalars")
    assert tags["sparsity/mean"][1] == pytest.approx(0.6)
