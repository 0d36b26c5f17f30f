"""Data front-end config: features, augmentation, batching."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.sample_rate = 16000
    c.num_mel_bins = 80
    c.frame_length_ms = 25.0
    c.frame_step_ms = 10.0
    c.fft_length = 512
    c.lower_edge_hz = 20.0
    c.upper_edge_hz = 7600.0
    c.log_floor = 1e-6
    # Augmentation (train only).
    c.specaugment = True
    c.freq_masks = 2
    c.freq_mask_width = 27
    c.time_masks = 4
    c.time_mask_max_ratio = 0.05
    c.speed_perturb = False
    c.speed_factors = (0.9, 1.0, 1.1)
    c.noise = False
    c.noise_dir = ""  # a user's noise corpus (e.g. MUSAN); generated noise when empty
    c.noise_snr_db = (10.0, 30.0)
    c.noise_prob = 0.5  # fraction of training utterances that get noise when noise=True
    c.noise_exponent = (0.0, 2.0)  # generated noise: power ~ 1/f**exponent (0 white, 1 pink, 2 brown)
    c.reverb = False
    c.reverb_prob = 0.5
    c.reverb_rt60_s = (0.2, 0.8)  # synthetic RIR decay time (60 dB)
    c.reverb_drr_db = (0.0, 10.0)  # direct-to-reverberant energy ratio
    # Batching.
    c.max_frames_per_batch = 12000  # feature frames (sum over the batch, padded), by length buckets
    c.batch_size = 16  # upper bound on utterances per batch
    c.bucket_boundaries_s = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0)
    c.max_duration_s = 35.0
    c.shuffle_buffer = 2000
    c.seed = 0
    # float16 log-mel .npy per utterance, built on first use; "auto" = <manifest dir>/feature_cache,
    # "" = decode FLAC in the pipeline. The cache measured ~3x faster (docs/BENCHMARKS.md "Input pipeline");
    # training with wave augmentation (speed/noise/reverb) always decodes.
    c.feature_cache_dir = "auto"
    return c
