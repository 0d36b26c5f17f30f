"""Model size per sparsity config: nonzero params and byte estimates (float32 / float16 / int8, dense and
TFLite block-sparse encoded).

Dimension key: ``N`` prunable kernels, ``K`` levels, kernel ``[I, O]`` (TFLite stores it ``[O, I]``), ``b``
block size along ``I``, ``nnz`` kept weights and ``nnzb`` kept blocks of a kernel at a level.

Per prunable kernel (``e`` = element bytes: 4 float32, 2 float16, 1 int8; ``x`` = index bytes, default 4):

    dense      e * I * O
    sparse     nnzb * (b * e + x) + (O + 1) * x        (CSR over blocks: values + block column indices,
                                                         row segments of the [O, I] layout)
    int8 adds  O * (4 + 8)                              (per-output-channel float32 scale + int64 zero point)
    encoded    min(dense, sparse)                       (the converter keeps the sparse form only if smaller)

Non-prunable params (biases, norms, embeddings, convs...) are counted dense at 4 bytes (float32 and
dynamic-range int8, where they stay float) or 2 bytes (float16). Graph, op and metadata overhead are not
counted: these are estimates of the weight payload; the export measures the real .tflite sizes.

Metrics (every one is a sum over kernels plus a constant, so a config's size is
``const + sum_i table[i, level_i]``): ``nonzero_params``, ``float32_bytes``, ``float16_bytes``, ``int8_bytes``
(dense storage: independent of the config), ``float32_sparse_bytes``, ``float16_sparse_bytes``,
``int8_sparse_bytes``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from omni_tf.sparsity import levels as lv

METRICS = ("nonzero_params", "float32_bytes", "float16_bytes", "int8_bytes", "float32_sparse_bytes",
           "float16_sparse_bytes", "int8_sparse_bytes")
_ELEM_BYTES = {"float32": 4, "float16": 2, "int8": 1}
_OTHER_BYTES = {"float32": 4, "float16": 2, "int8": 4}  # non-prunable tensors stay float32 in int8 mode
_QUANT_BYTES_PER_CHANNEL = 4 + 8  # float32 scale + int64 zero point (TFLite QuantizationParameters)


class SizeModel:
    """Size tables of one model for every (kernel, level).

    Args:
      names: kernel names, model order.
      shapes: ``[I, O]`` per kernel.
      other_params: number of non-prunable parameters.
      levels: the sparsity set.
      block: block size along ``I``.
      nnz: optional exact kept weights ``[N, K]`` (from survival tensors); default analytic.
      nnz_blocks: optional exact kept blocks ``[N, K]``; default analytic.
      index_bytes: bytes per sparse index (4: int32 vectors).
    """

    def __init__(self, names: Sequence[str], shapes: Sequence[Sequence[int]], other_params: int,
                 levels: Sequence[float] = lv.DEFAULT_LEVELS, block: int | str = 1,
                 nnz: np.ndarray | None = None, nnz_blocks: np.ndarray | None = None, index_bytes: int = 4):
        self.names = tuple(names)
        self.shapes = np.asarray([tuple(int(d) for d in s) for s in shapes], np.int64).reshape(-1, 2)
        if len(self.names) != len(self.shapes) or not self.names:
            raise ValueError(f"SizeModel: {len(self.names)} names for {len(self.shapes)} shapes")
        if other_params < 0:
            raise ValueError(f"SizeModel: other_params must be >= 0, got {other_params}")
        self.other_params = int(other_params)
        self.levels = lv.validate_levels(levels)
        self.block = lv.parse_block(block)
        self.index_bytes = int(index_bytes)
        in_dim, out_dim = self.shapes[:, 0], self.shapes[:, 1]
        units = np.asarray([lv.num_units(s, self.block) for s in self.shapes], np.int64)
        if nnz is None:  # whole blocks: exact; partial last block: within b/2 weights
            micro = np.round(np.asarray(self.levels) * 1_000_000).astype(np.int64)
            weights = in_dim * out_dim
            nnz = (weights[:, None] * (1_000_000 - micro)[None, :] + 500_000) // 1_000_000
        if nnz_blocks is None:
            nnz_blocks = np.stack([lv.keep_counts(int(u), self.levels) for u in units])
        self.nnz = np.asarray(nnz, np.int64).reshape(len(self.names), len(self.levels))
        self.nnz_blocks = np.asarray(nnz_blocks, np.int64).reshape(self.nnz.shape)
        self.total_params = self.other_params + int((in_dim * out_dim).sum())
        self._tables = self._build_tables(in_dim, out_dim)

    # -- constructors -----------------------------------------------------------------------------------
    @classmethod
    def from_masks(cls, masks: Any, other_params: int, index_bytes: int = 4) -> SizeModel:
        """Exact counts from a ``SupernetMasks``' current survival tensors (granularity ``structured``: a
        ``structured.StructuredSizeModel``, exact bytes of the sliced model; ``other_params`` unused)."""
        if getattr(masks, "granularity", "weights") == "structured":
            from omni_tf.sparsity.structured import StructuredSizeModel  # noqa: PLC0415 (imports this module)

            return StructuredSizeModel.from_masks(masks)
        nnz, nnz_blocks, shapes = [], [], []
        for surv in masks.survival_arrays().values():
            shapes.append(surv.shape)
            firsts = surv[:: masks.block]  # first row of every block: one entry per unit
            nnz.append([(surv >= k).sum() for k in range(masks.num_levels)])
            nnz_blocks.append([(firsts >= k).sum() for k in range(masks.num_levels)])
        return cls(masks.names, shapes, other_params, masks.levels, masks.block, np.asarray(nnz),
                   np.asarray(nnz_blocks), index_bytes)

    @classmethod
    def from_model(cls, model: Any, levels: Sequence[float] = lv.DEFAULT_LEVELS, block: int | str = 1,
                   masks: Any = None, index_bytes: int = 4) -> SizeModel:
        """From a model with ``prunable_kernels()``, ``kernel_masks()`` and ``weights``; exact if ``masks``
        (a ranked ``SupernetMasks``) is given, else analytic."""
        other = count_other_params(model)
        if masks is not None:
            return cls.from_masks(masks, other, index_bytes)
        kernels = model.prunable_kernels()
        return cls([n for n, _ in kernels], [tuple(k.shape) for _, k in kernels], other, levels, block,
                   index_bytes=index_bytes)

    # -- tables ------------------------------------------------------------------------------------------
    def _build_tables(self, in_dim: np.ndarray, out_dim: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
        k = len(self.levels)
        weights = (in_dim * out_dim)[:, None].repeat(k, axis=1)
        x = self.index_bytes
        tables = {"nonzero_params": (float(self.other_params), self.nnz.astype(np.float64))}
        for fmt, e in _ELEM_BYTES.items():
            const = float(self.other_params * _OTHER_BYTES[fmt])
            quant = (out_dim * _QUANT_BYTES_PER_CHANNEL)[:, None] if fmt == "int8" else 0
            dense = (e * weights + quant).astype(np.float64)
            sparse = self.nnz_blocks * (self.block * e + x) + ((out_dim + 1) * x)[:, None] + quant
            tables[f"{fmt}_bytes"] = (const, dense)
            tables[f"{fmt}_sparse_bytes"] = (const, np.minimum(dense, sparse.astype(np.float64)))
        return tables

    def table(self, metric: str) -> tuple[float, np.ndarray]:
        """``(const, per_kernel [N, K])`` with ``size(config) = const + sum_i per_kernel[i, config_i]``."""
        if metric not in self._tables:
            raise ValueError(f"unknown size metric {metric!r}; choose one of {METRICS}")
        return self._tables[metric]

    # -- per config ----------------------------------------------------------------------------------------
    def vector(self, config: Mapping[str, int] | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(config, Mapping):
            return lv.config_to_vector(config, self.names, len(self.levels))
        vec = np.asarray(config, np.int64).reshape(-1)
        if len(vec) != len(self.names) or vec.min() < 0 or vec.max() >= len(self.levels):
            raise ValueError(f"level vector must have {len(self.names)} entries in [0, {len(self.levels)})")
        return vec

    def measure_many(self, vectors: np.ndarray, metric: str) -> np.ndarray:
        """Sizes ``[P]`` of level vectors ``[P, N]``."""
        const, per_kernel = self.table(metric)
        vectors = np.asarray(vectors, np.int64).reshape(-1, len(self.names))
        return const + per_kernel[np.arange(len(self.names))[None, :], vectors].sum(axis=1)

    def measure(self, config: Mapping[str, int] | Sequence[int] | np.ndarray, metric: str) -> float:
        return float(self.measure_many(self.vector(config)[None, :], metric)[0])

    def report(self, config: Mapping[str, int] | Sequence[int] | np.ndarray) -> dict[str, float]:
        """Every metric for ``config`` plus ``total_params`` (dense)."""
        vec = self.vector(config)
        out = {m: self.measure(vec, m) for m in METRICS}
        out["total_params"] = float(self.total_params)
        return out

    def dense_int8_bytes(self) -> float:
        """Bytes of the dense dynamic-range int8 model (the reference for tier budgets as fractions)."""
        return self.measure(np.zeros(len(self.names), np.int64), "int8_bytes")

    def uniform_config(self, k: int) -> dict[str, int]:
        if not 0 <= k < len(self.levels):
            raise ValueError(f"level {k} outside [0, {len(self.levels)})")
        return {n: int(k) for n in self.names}

    def uniform_level_for_budget(self, budget: float, metric: str = "int8_sparse_bytes") -> int:
        """Densest uniform level with ``metric <= budget``; ValueError if even the sparsest exceeds it."""
        sizes = [self.measure(np.full(len(self.names), k), metric) for k in range(len(self.levels))]
        for k, size in enumerate(sizes):
            if size <= budget:
                return k
        raise ValueError(f"budget {budget:.0f} ({metric}) is below the sparsest uniform size {sizes[-1]:.0f}")


def count_other_params(model: Any) -> int:
    """Trainable parameters of ``model.weights`` that are not prunable kernels (masks - of kernels, of a
    non-prunable embedding, the model's ``unit_masks()`` - are not parameters)."""
    skip = {id(v) for _, v in model.prunable_kernels()} | {id(v) for _, v in model.kernel_masks()}
    skip |= {id(v) for v in getattr(model, "unit_masks", list)()}
    return int(sum(int(np.prod(v.shape)) for v in model.weights if id(v) not in skip and v.trainable))
