"""Training-loop config."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "omni"  # dense | pruned | omni
    c.strategy = "one_device"  # one_device | mirrored | multi_worker
    c.device = ""  # "" picks GPU:0 if present else CPU:0
    c.max_steps = 8000
    c.max_minutes = 0.0  # wall-clock budget; 0 = none
    c.learning_rate = 1.5e-3
    c.warmup_steps = 800
    c.decay = "cosine"  # cosine | noam | constant
    c.min_lr_ratio = 0.05
    c.adam_epsilon = 1e-9
    c.weight_decay = 1e-6
    c.clip_norm = 5.0
    c.grad_accum_steps = 1
    c.mixed_precision = False
    c.checkpoint_every = 250
    c.keep_checkpoints = 3
    c.summary_every = 25
    c.log_every = 25
    c.eval_every = 0
    c.seed = 0
    return c
