"""Training-loop config."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "omni"  # dense | pruned | omni
    c.strategy = "one_device"  # one_device | mirrored | multi_worker
    c.device = ""  # "" picks GPU:0 if present else CPU:0
    c.max_steps = 8000
    c.max_minutes = 0.0  # wall-clock budget over all resumes; 0 = none. Schedules end with it (progress.py)
    c.learning_rate = 1.5e-3
    c.warmup_steps = 800
    c.decay = "cosine"  # cosine | eden | constant; on the progress clock (omni_tf/training/progress.py)
    c.min_lr_ratio = 0.05  # cosine: final rate / learning_rate
    c.eden_steps = 5000  # eden: steps after which the rate falls noticeably (icefall's lr_batches)
    c.eden_progress = 0.3  # eden: its second factor's scale in progress (0 = off; icefall's lr_epochs)
    c.adam_epsilon = 1e-9
    c.weight_decay = 1e-6
    c.clip_norm = 5.0
    # Stop with an error naming the utterances after this many consecutive updates skipped for a NaN/Inf
    # loss or gradient (a poisoned input or CMVN, or divergence); 0 = never stop.
    c.max_consecutive_skips = 50
    c.init_from = ""  # fresh runs start from this shipped bundle (training/pretrained.py); "" = random
    c.ctc_weight = 0.0  # auxiliary CTC head on the encoder (losses/ctc.py), training only; 0 = off
    c.grad_accum_steps = 1
    c.mixed_precision = False
    c.checkpoint_every = 250
    c.keep_checkpoints = 3
    c.summary_every = 25
    c.log_every = 25
    c.seed = 0
    return c
