"""benchmarks/plot_curves.py: which evaluations of an omni_vs_pruned results.json become which curve."""
from benchmarks import plot_curves


def test_curves_groups_runs_by_variant_and_keeps_only_same_step_pruned_runs():
    evals = {
        "omni_s200/phone": {"wer": 0.5}, "omni_s500/phone": {"wer": 0.4},
        "omni_tiers_kd_s500/phone": {"wer": 0.3}, "omni_tiers_kd_s500/speaker": {"wer": 0.2},
        "pruned_phone_s200/phone": {"wer": 0.45}, "pruned_phone_s500/phone": {"wer": 0.35},
        "pruned_phone_s567/phone": {"wer": 0.34},  # protocol compute: not a budget, not on the curve
        "pruned_speaker_s500/speaker": {"wer": 0.25}, "unrelated/phone": {"wer": 1.0},
    }
    got = plot_curves.curves(evals, {200, 500})
    assert got["phone"] == {"omni base": [(200, 50.0), (500, 40.0)], "omni tiers_kd": [(500, 30.0)],
                            "pruned": [(200, 45.0), (500, 35.0)]}
    assert got["speaker"] == {"omni tiers_kd": [(500, 20.0)], "pruned": [(500, 25.0)]}
