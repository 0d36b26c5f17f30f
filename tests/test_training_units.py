"""Model-free tests of the training pieces: LR schedule, loss scale, distillation KL, progress, summaries."""
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.configs import training as training_config
from omni_tf.training import optim, step, summaries


def test_warmup_cosine_values():
    s = optim.WarmupDecay(1e-3, warmup_steps=10, total_steps=110, decay="cosine", min_lr_ratio=0.1)
    assert float(s(0)) == pytest.approx(1e-4)  # first update: 1/10 of peak
    assert float(s(9)) == pytest.approx(1e-3)
    assert float(s(59)) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 0.5)), rel=1e-5)
    assert float(s(109)) == pytest.approx(1e-4, rel=1e-5)
    assert float(s(500)) == pytest.approx(1e-4, rel=1e-5)


def test_noam_and_constant():
    noam = optim.WarmupDecay(1e-3, 100, 1000, "noam", 0.0)
    assert float(noam(399)) == pytest.approx(1e-3 * math.sqrt(100 / 400), rel=1e-5)
    assert float(optim.WarmupDecay(2e-3, 0, 10, "constant")(5)) == pytest.approx(2e-3)


def test_schedule_config_round_trip_and_errors():
    s = optim.WarmupDecay(1e-3, 5, 50, "noam", 0.2)
    assert optim.WarmupDecay.from_config(s.get_config()).get_config() == s.get_config()
    with pytest.raises(ValueError, match="decay"):
        optim.WarmupDecay(1e-3, 5, 50, "linear")
    with pytest.raises(ValueError, match="bad schedule"):
        optim.WarmupDecay(0.0, 5, 50)


def test_make_optimizer_from_config():
    opt = optim.make_optimizer(training_config.get_config())
    assert isinstance(opt.learning_rate, optim.WarmupDecay) or callable(opt._learning_rate)


def test_dynamic_loss_scale():
    ls = optim.DynamicLossScale(initial=8.0, growth_interval=2)
    ls.update(tf.constant(False))
    assert float(ls.scale) == 4.0 and int(ls.good_steps) == 0
    ls.update(tf.constant(True))
    assert float(ls.scale) == 4.0 and int(ls.good_steps) == 1
    ls.update(tf.constant(True))
    assert float(ls.scale) == 8.0 and int(ls.good_steps) == 0


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
                    "elapsed 0:00:50 ETA 0:02:30")
    assert summaries.format_duration(3725.4) == "1:02:05"
    assert summaries.format_duration(float("nan")) == "?"
    assert "ETA ?" in summaries.progress_line(0, 10, 1.0, 1e-3, 0.0, 0.0, 0.0)


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
