"""Shipped dense starting points: write a trained model as a small bundle, and initialise a model from one.

Why: pruning work prunes a trained network (Zhu & Gupta 2017, the paper's [1]); on 2 cores a 20-minute run
cannot both teach a model the language and shrink it, so ``recipes/synthetic/pretrain.py`` trains the dense
model once for hours and ships it, and ``run_demo --init=shipped`` starts the supernet from it.

A bundle directory (``omni_tf/resources/pretrained/<name>/``)::

    weights.npz   every trainable variable as float16, keyed by name (no optimizer state, no masks)
    spm.model     the SentencePiece model the labels were made with
    cmvn.json     the feature normalization the model was trained with
    config.json   the full experiment config (its ``model`` section builds the same model)
    bundle.json   name, command, CPU-hours, steps, WER/CER (and split), corpus spec (written last)

The weights only mean something with the labels and features they were trained with: a run from a bundle
must read the bundle's ``spm.model`` and ``cmvn.json`` (byte for byte; ``check_data_files``, called by the
training loop for every ``training.init_from`` run on a manifest source). ``run_demo --init=shipped`` and
``benchmarks/omni_vs_pruned.py --pretrained`` put them beside the corpus manifests in ``<out>/data_shipped``
(``recipes.end_to_end.copy_shipped_data``).

Errors: a missing directory or file raises FileNotFoundError naming it; a model whose variables do not match
the weights (names or shapes) raises ValueError listing the first differences; a SentencePiece model or CMVN
other than the bundle's raises ValueError naming both files; ``check_bundle_target`` raises FileExistsError
naming a folder a new bundle would replace that its writer did not write. A bundle.json names other bundles
(its parent) by ``bundle_reference``, never by a path of the machine that wrote it.
"""
from __future__ import annotations

import filecmp
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from omni_tf import fileio

BUNDLE_FILES = ("weights.npz", "spm.model", "cmvn.json", "config.json", "bundle.json")
# The bundle files a run from it must read as its own data files: what each one fixes.
DATA_FILES = {"spm.model": "the label pieces", "cmvn.json": "the feature normalization"}
RESOURCE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources", "pretrained")


def bundle_dir(name_or_path: str) -> str:
    """A bundle path: ``name_or_path`` itself if it contains a path separator, else under RESOURCE_DIR."""
    return name_or_path if os.sep in name_or_path else os.path.join(RESOURCE_DIR, name_or_path)


def check_bundle(path: str) -> dict[str, Any]:
    """Returns ``bundle.json``; raises FileNotFoundError naming the missing folder or file."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no shipped model: folder {path} does not exist (train one with "
                                "recipes/synthetic/pretrain.py, or use --init=scratch)")
    missing = [f for f in BUNDLE_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise FileNotFoundError(f"shipped model folder {path} lacks {missing} (unfinished bundle?)")
    with open(os.path.join(path, "bundle.json"), encoding="utf-8") as f:
        return json.load(f)


def foreign_data_files(path: str, spm_model: str, cmvn: str) -> list[str]:
    """Which of ``spm_model`` / ``cmvn`` (paths a run reads) differ in bytes from the bundle's ``spm.model`` /
    ``cmvn.json`` (or are missing): one line per file naming both paths and what the file fixes; [] when
    both are the bundle's. Raises FileNotFoundError (``check_bundle``) for a bundle without them."""
    check_bundle(path)
    lines = []
    for (name, what), given in zip(DATA_FILES.items(), (spm_model, cmvn), strict=True):
        own = os.path.join(path, name)
        if not (os.path.isfile(given) and filecmp.cmp(given, own, shallow=False)):
            state = "differs from" if os.path.isfile(given) else "is missing, not"
            lines.append(f"{given} {state} the bundle's {own} ({what})")
    return lines


def check_data_files(path: str, spm_model: str, cmvn: str) -> None:
    """Raises ValueError unless ``spm_model`` and ``cmvn`` are byte for byte the bundle's ``spm.model`` and
    ``cmvn.json``: with others the labels and features are not those the weights were trained with, and
    training from them silently learns garbage. The message names both files of each pair."""
    foreign = foreign_data_files(path, spm_model, cmvn)
    if foreign:
        raise ValueError(
            f"training from the shipped model {path} (training.init_from) with data files that are not its "
            f"own: {'; '.join(foreign)}. Read the bundle's spm.model and cmvn.json beside the manifests: "
            "run_demo --init=shipped and omni_vs_pruned --pretrained copy them into <out>/data_shipped; "
            "elsewhere give --config.paths.spm_model / cmvn of the bundle.")


def model_config(path: str) -> ml_collections.ConfigDict:
    """The bundle's model config (``config.json``'s ``model`` section)."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f)["model"])


def _weight_names(model) -> list[str]:
    names = [v.name for v in model.trainable_variables]
    if len(set(names)) != len(names):
        raise ValueError("model variable names are not unique; cannot key shipped weights by name")
    return names


def write_bundle(model, config: ml_collections.ConfigDict, spm_model: str, cmvn: str, out_dir: str,
                 info: Mapping[str, Any]) -> str:
    """Writes the bundle of ``model`` into ``out_dir`` (replacing one there); ``info`` goes to bundle.json.

    ``bundle.json`` is written last: a bundle without it is unfinished (``check_bundle`` refuses it).
    ``config.json`` is ``config`` without the writing machine's files: every ``paths`` field and
    ``training.init_from`` are emptied (the bundle carries its spm.model and cmvn.json; its ancestry is in
    ``info``), so a shipped bundle names no path of the machine that trained it.
    """
    os.makedirs(out_dir, exist_ok=True)
    stale = os.path.join(out_dir, "bundle.json")
    if os.path.exists(stale):
        os.remove(stale)
    variables = model.trainable_variables
    arrays = {n: v.numpy().astype(np.float16) for n, v in zip(_weight_names(model), variables, strict=True)}
    tmp = os.path.join(out_dir, "weights.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, os.path.join(out_dir, "weights.npz"))
    fileio.copy_file(spm_model, os.path.join(out_dir, "spm.model"))
    fileio.copy_file(cmvn, os.path.join(out_dir, "cmvn.json"))
    portable = ml_collections.ConfigDict(config.to_dict())
    for field in portable.paths:
        portable.paths[field] = ""
    portable.training.init_from = ""
    fileio.write_text(os.path.join(out_dir, "config.json"), portable.to_json_best_effort(indent=1))
    fileio.write_json(stale, dict(info))
    return out_dir


def check_bundle_target(target: str, own_record: str, overwrite: bool) -> None:
    """Whether a bundle may be written into ``target``: raises FileExistsError naming ``target`` and what it
    holds when it exists (a file, or a folder with anything in it: a shipped bundle, another run's) unless
    ``overwrite``, or unless ``own_record`` (a JSON file ``{"bundle_dir": ...}`` the writer keeps) names it:
    the writer's own earlier bundle, which a rerun replaces."""
    if overwrite or not os.path.exists(target) or (os.path.isdir(target) and not os.listdir(target)):
        return
    if os.path.isfile(own_record):
        with open(own_record, encoding="utf-8") as f:
            if os.path.realpath(json.load(f)["bundle_dir"]) == os.path.realpath(target):
                return
    what = ("a bundle" if os.path.isfile(os.path.join(target, "bundle.json"))
            else "files" if os.path.isdir(target) else "a file of that name")
    raise FileExistsError(f"the bundle would be written to {target}, which already holds {what} this run did "
                          f"not write ({own_record} does not name it)")


def load_weights(model, path: str) -> int:
    """Assigns the bundle's weights (float16 -> the variable's dtype) to ``model``; returns the count.

    Raises FileNotFoundError (see ``check_bundle``) or ValueError if names or shapes differ.
    """
    check_bundle(path)
    with np.load(os.path.join(path, "weights.npz")) as data:
        stored = {k: data[k] for k in data.files}
    names = _weight_names(model)
    missing = [n for n in names if n not in stored]
    extra = [n for n in stored if n not in set(names)]
    variables = model.trainable_variables
    shapes = [f"{n}: {stored[n].shape} vs {tuple(v.shape)}" for n, v in zip(names, variables, strict=True)
              if n in stored and stored[n].shape != tuple(v.shape)]
    if missing or extra or shapes:
        raise ValueError(f"shipped weights in {path} do not fit this model: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}, shapes {shapes[:5]}")
    for name, var in zip(names, variables, strict=True):
        var.assign(stored[name].astype(var.dtype.as_numpy_dtype))
    return len(names)


def chain_steps(info: Mapping[str, Any]) -> int:
    """Optimizer steps behind a bundle (its ``bundle.json`` ``info``): ``total_steps`` when recorded, else
    ``steps``, which a bundle trained in stages records per stage (a list: demo_tiny's ``[6000, 16454]``)."""
    steps = info.get("total_steps", info.get("steps")) or 0
    return int(sum(steps)) if isinstance(steps, (list, tuple)) else int(steps)


def bundle_reference(path: str) -> str:
    """How a bundle.json names another bundle without the writing machine's paths: a bundle under
    ``RESOURCE_DIR`` by its path relative to the repository (``omni_tf/resources/pretrained/demo_tiny``, which
    ``--pretrained`` reads from the repository root), any other by its folder's name."""
    real, resources = os.path.realpath(path), os.path.realpath(RESOURCE_DIR)
    if os.path.commonpath([real, resources]) == resources and real != resources:
        repository = os.path.dirname(os.path.dirname(os.path.dirname(resources)))
        return os.path.relpath(real, repository).replace(os.sep, "/")
    return os.path.basename(os.path.normpath(real))


def lineage(parent_path: str, parent: Mapping[str, Any], cpu_s: float, steps: int | None) -> dict[str, Any]:
    """The ``bundle.json`` fields of a bundle trained on from the bundle ``parent_path`` (``parent``: its
    ``bundle.json``; ``recipes/synthetic/pretrain.py --pretrained``): ``parent`` (its name, path as
    ``bundle_reference`` gives it, command, cpu_hours, steps and own ``parent``), ``cpu_hours`` (the parent's
    plus this run's ``cpu_s`` seconds, in hours), ``run_cpu_hours`` and ``total_steps`` (the chain's steps:
    ``chain_steps(parent)`` + ``steps``)."""
    return {"cpu_hours": round(float(parent.get("cpu_hours") or 0.0) + cpu_s / 3600.0, 3),
            "run_cpu_hours": round(cpu_s / 3600.0, 3), "total_steps": chain_steps(parent) + int(steps or 0),
            "parent": {"name": parent.get("name"), "path": bundle_reference(parent_path),
                       **{k: parent.get(k) for k in ("command", "cpu_hours", "steps", "parent")}}}
