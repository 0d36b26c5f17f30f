"""A run cut short before the schedule's end_step still leaves survival levels at the final targets."""
import numpy as np
import pytest
import tensorflow as tf

import omni_tf  # noqa: F401
from omni_tf.training import loop, sources
from tests.training_helpers import tiny_config


@pytest.mark.parametrize("end_step_reached", [False, True])
def test_stopping_before_end_step_ranks_at_final_targets(tmp_path, end_step_reached):
    config = tiny_config("omni")
    config.sparsity.begin_step, config.sparsity.end_step, config.sparsity.frequency = 0, 1000, 1
    config.training.max_steps = 2  # far before end_step: the ramp reached ~0.6% of the targets
    if end_step_reached:  # the loop's last ranking is at step end_step - 1, still ramping
        config.sparsity.end_step, config.training.max_steps = 4, 4
    metrics = loop.train(config, str(tmp_path), sources.RandomFeatureSource(16, num_batches=2))
    assert metrics["step"] == config.training.max_steps
    state = loop.TrainState(config, loop.make_strategy(config.training))
    tf.train.Checkpoint(**state.trackables()).restore(metrics["checkpoint"]).expect_partial()
    np.testing.assert_allclose(state.masks.current_sparsities.numpy(), config.sparsity.levels, atol=1e-6)
    for name, surv in state.masks.survival_arrays().items():
        for k, s in enumerate(config.sparsity.levels):
            assert abs(float(np.mean(surv < k)) - s) < 0.02, (name, k, float(np.mean(surv < k)))
