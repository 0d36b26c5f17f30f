"""Supernet config: sparsity set, schedule, sampler, search; every field is read once, by
``omni_tf.supernet.SparsitySettings``."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.levels = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    c.block = "1x1"  # "1x1" unstructured, "1x4" (float TFLite), "1x16" (int8 TFLite); along the input dim
    # "weights": masks over weights / 1xN blocks (`block`); "structured": over whole heads, FFN units, conv
    # channels, predictor/joiner units (omni_tf/sparsity/structured.py; `block` unused), exported sliced
    c.granularity = "weights"
    c.begin_step = 1000
    c.end_step = 6000
    c.frequency = 100
    c.power = 3
    c.sampler = "sandwich"  # sandwich | uniform | per_layer | tiers | tiers_random (sampling.py)
    c.subnets_per_step = 1  # random subnets on top of densest+sparsest for sandwich
    c.train_levels = (0.6, 0.75, 0.9)  # tiers / tiers_random: the deployed tiers' sparsities (demo --tiers)
    # tiers / tiers_random: loss weight of each train_levels entry (same order; the dense subnet weighs 1);
    # a step's subnet s is scaled by w_s / sum(w) over its subnets (per-subnet loss weighting of a
    # weight-sharing supernet; sampling.py). () = every subnet 1: the plain mean over subnets
    c.tier_weights = ()
    c.distill_weight = 0.0  # > 0: in-place distillation from the dense subnet (training/distill.py)
    c.distill_mode = "add"  # add: label + w*KD | replace: w*KD | mix: (1-w)*label + w*KD
    c.distill_norm = "nodes"  # KD scale: nodes (mean KL per lattice node) | sequence (x (T' + U))
    # per-level LayerNorm gamma/beta (switchable norms of slimmable nets, Yu et al. 2019 Sec. 3.2): every
    # encoder LayerNorm takes the level of the kernel producing its input; + (K-1) x 2 x D params per norm,
    # exported tiers carry their own (sparsity/level_norms.py); granularity weights only
    c.per_level_norm = False
    c.target_sparsity = 0.7  # mode=pruned: the individually-pruned baseline's level
    c.norm = "l2"  # score of a block (blocks > 1) when ranking: l2 | l1
    c.dense_warmup = True  # omni: train only the dense model before begin_step
    c.random_kind = "per_layer"  # sandwich's random subnets: per_layer | uniform
    # evolutionary search of per-layer tiers (sparsity/search.py; the search, export and end-to-end recipes)
    c.search_metric = "auto"  # size.py metric of tier budgets; auto: the export quantization's (supernet.py)
    c.search_population = 12  # fitness evaluations per tier <= population * (generations + 1)
    c.search_generations = 6
    c.search_mutation_prob = 0.1
    c.search_seed = 0
    c.search_fitness = "loss"  # end-to-end search stage: dev-subset RNN-T loss | greedy WER
    c.search_dev_utterances = 256  # dev utterances of that fitness (0 = the whole dev split)
    return c
