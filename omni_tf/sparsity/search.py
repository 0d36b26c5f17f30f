"""Evolutionary search of per-kernel level configs under a size budget.

Dimension key: ``P`` population, ``N`` prunable kernels, ``K`` levels.

A candidate is a level vector ``[N]``; its size is ``size_model.measure(config, metric)`` (``size.py``), its
quality an injected ``fitness(config: dict[name, level]) -> float`` (lower is better by default: a
dev-subset loss or WER measured on the supernet with ``SupernetMasks.apply(config)``). The search:

1. starts from the densest uniform config within the budget plus random configs around it;
2. every candidate is *repaired* to the budget: while too big, raise the level of a random kernel
   (weighted by the bytes that saves); then *filled*: in random order, lower a kernel's level while the
   config still fits, so no single kernel can be made denser;
3. each generation keeps the best ``num_parents`` (elitism) and breeds children by uniform crossover of two
   parents (prob ``crossover_prob``) and per-gene mutation to a random level (prob ``mutation_prob``).

Fitness values are cached per config; the result reports the best config, its size, and the uniform config
of the same budget for comparison. Seeded: ``numpy.random.default_rng(seed)``.

A fitness measured on a dev subset can rank configs differently from test WER, so the deployed tier is the
searched config only when it is better than the uniform config of the same budget on held-out data
(``choose_config``: its WER difference to the uniform config, with a bootstrap interval, is below 0).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from omni_tf.sparsity import levels as lv
from omni_tf.sparsity.size import SizeModel


@dataclasses.dataclass
class SearchResult:
    """Best config under ``budget`` and the uniform baseline of the same budget."""

    budget: float
    metric: str
    config: dict[str, int]
    fitness: float
    size: float
    uniform_config: dict[str, int]
    uniform_fitness: float
    uniform_size: float
    evaluations: int
    history: list[float]  # best fitness after each generation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Budgeted:
    """Repair and fill of level vectors against ``const + sum_i table[i, v_i] <= budget``."""

    def __init__(self, size_model: SizeModel, metric: str, budget: float, rng: np.random.Generator):
        self.const, self.table = size_model.table(metric)
        self.budget = float(budget)
        self.rng = rng
        self.n, self.k = self.table.shape

    def cost(self, vec: np.ndarray) -> float:
        return float(self.const + self.table[np.arange(self.n), vec].sum())

    def repair(self, vec: np.ndarray) -> np.ndarray:
        vec = vec.copy()
        cost = self.cost(vec)
        while cost > self.budget:
            open_ = np.flatnonzero(vec < self.k - 1)
            savings = self.table[open_, vec[open_]] - self.table[open_, vec[open_] + 1]
            weights = savings + 1e-9 * max(1.0, float(savings.max()))
            i = open_[self.rng.choice(len(open_), p=weights / weights.sum())]
            cost -= self.table[i, vec[i]] - self.table[i, vec[i] + 1]
            vec[i] += 1
        for i in self.rng.permutation(self.n):  # fill: make kernels denser while it fits
            while vec[i] > 0 and cost + self.table[i, vec[i] - 1] - self.table[i, vec[i]] <= self.budget:
                cost += self.table[i, vec[i] - 1] - self.table[i, vec[i]]
                vec[i] -= 1
        return vec


def evolutionary_search(
    fitness: Callable[[dict[str, int]], float],
    size_model: SizeModel,
    budget: float,
    metric: str = "int8_sparse_bytes",
    population: int = 32,
    generations: int = 20,
    num_parents: int | None = None,
    mutation_prob: float = 0.1,
    crossover_prob: float = 0.5,
    seed: int = 0,
    minimize: bool = True,
) -> SearchResult:
    """Best per-kernel config with ``size_model.measure(config, metric) <= budget``.

    Raises ValueError if the budget is below the sparsest uniform config or the arguments are invalid.
    """
    if population < 2 or generations < 0:
        raise ValueError(f"search needs population >= 2, generations >= 0; got {population}, {generations}")
    if not 0.0 <= mutation_prob <= 1.0 or not 0.0 <= crossover_prob <= 1.0:
        raise ValueError("mutation_prob and crossover_prob must be in [0, 1]")
    num_parents = num_parents or max(2, population // 4)
    if not 2 <= num_parents <= population:
        raise ValueError(f"num_parents must be in [2, population], got {num_parents}")
    rng = np.random.default_rng(seed)
    names = size_model.names
    uniform_level = size_model.uniform_level_for_budget(budget, metric)  # raises if infeasible
    budgeted = _Budgeted(size_model, metric, budget, rng)
    n, k = budgeted.n, budgeted.k
    sign = 1.0 if minimize else -1.0
    cache: dict[tuple[int, ...], float] = {}

    def score(vec: np.ndarray) -> float:  # lower is better
        key = tuple(int(v) for v in vec)
        if key not in cache:
            cache[key] = sign * float(fitness(lv.vector_to_config(vec, names)))
        return cache[key]

    uniform = np.full(n, uniform_level, np.int64)
    pop = [uniform]
    while len(pop) < population:
        if rng.random() < 0.5:
            vec = np.clip(uniform + rng.integers(-2, 3, size=n), 0, k - 1)
        else:
            vec = rng.integers(0, k, size=n)
        pop.append(budgeted.repair(vec))
    history = []
    for _ in range(generations):
        pop = _unique(sorted(pop, key=score))
        parents = pop[:num_parents]
        children, tries = [], 0
        seen = {tuple(p) for p in parents}
        while len(parents) + len(children) < population and tries < 20 * population:
            tries += 1
            a, b = (parents[i] for i in rng.choice(len(parents), size=2, replace=len(parents) < 2))
            child = np.where(rng.random(n) < 0.5, a, b) if rng.random() < crossover_prob else a.copy()
            mutate = rng.random(n) < mutation_prob
            child = budgeted.repair(np.where(mutate, rng.integers(0, k, size=n), child))
            if tuple(child) not in seen:
                seen.add(tuple(child))
                children.append(child)
        pop = parents + children
        history.append(sign * score(min(pop, key=score)))
    best = min(pop, key=score)
    return SearchResult(
        budget=float(budget), metric=metric, config=lv.vector_to_config(best, names),
        fitness=sign * score(best), size=budgeted.cost(best),
        uniform_config=lv.vector_to_config(uniform, names), uniform_fitness=sign * score(uniform),
        uniform_size=budgeted.cost(uniform), evaluations=len(cache), history=history)


def _unique(vectors: list[np.ndarray]) -> list[np.ndarray]:
    seen, out = set(), []
    for v in vectors:
        if tuple(v) not in seen:
            seen.add(tuple(v))
            out.append(v)
    return out


def budgets_from_fractions(size_model: SizeModel, fractions: Mapping[str, float]) -> dict[str, float]:
    """``{tier: fraction}`` of the dense int8 model's bytes -> ``{tier: bytes}``."""
    dense = size_model.dense_int8_bytes()
    bad = {t: f for t, f in fractions.items() if not 0.0 < f}
    if bad:
        raise ValueError(f"tier fractions must be > 0, got {bad}")
    return {t: float(f) * dense for t, f in fractions.items()}


def search_budgets(fitness: Callable[[dict[str, int]], float], size_model: SizeModel,
                   budgets: Mapping[str, float], **kwargs: Any) -> dict[str, SearchResult]:
    """``evolutionary_search`` for every ``{tier: budget}``; ``kwargs`` go to it (same seed per tier)."""
    return {tier: evolutionary_search(fitness, size_model, b, **kwargs) for tier, b in budgets.items()}


def masked_fitness(masks: Any, evaluate: Callable[[], float]) -> Callable[[dict[str, int]], float]:
    """Fitness that applies ``config`` to ``masks`` (a ranked ``SupernetMasks``) and returns ``evaluate()``
    (e.g. dev-subset loss of the masked model). The masks are left at the last evaluated config."""
    def fitness(config: dict[str, int]) -> float:
        masks.apply(config)
        return float(evaluate())
    return fitness


SEARCHED, UNIFORM = "searched", "uniform"


def choose_config(searched_minus_uniform: tuple[float, float, float], same_config: bool = False
                  ) -> tuple[str, str]:
    """``(SEARCHED or UNIFORM, reason)``: keep the searched config only when it is better on dev.

    ``searched_minus_uniform`` is ``(diff, lo, hi)``: dev WER of the searched config minus that of the uniform
    config of the same budget, with a confidence interval (``omni_tf.metrics.bootstrap_wer_diff``). The
    searched config wins only when the whole interval is below 0; a tie or a loss falls back to the uniform
    config (the simpler one, and the one the search started from). ``same_config``: the search returned the
    uniform config itself.
    """
    diff, lo, hi = searched_minus_uniform
    if not lo <= diff <= hi:
        raise ValueError(f"choose_config wants lo <= diff <= hi, got {searched_minus_uniform}")
    pts = f"dev WER searched - uniform {100 * diff:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    if same_config:
        return UNIFORM, "the search returned the uniform config"
    if hi < 0:
        return SEARCHED, f"{pts}: better on dev"
    return UNIFORM, f"{pts}: " + ("worse on dev" if lo > 0 else "not better on dev (interval contains 0)")
