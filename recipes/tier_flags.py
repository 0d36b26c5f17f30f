"""The ``--tiers`` flag every recipe shares: ``name=kind:value,...``, parsed by ``supernet.parse_tiers``.

Kinds (the quantity is always named in the value): ``sparsity:0.75`` (a uniform config of that sparsity),
``bytes:0.35`` (a fraction of the dense dynamic-range int8 model's bytes), ``level:3`` (an index into the
supernet's level set). Each recipe accepts the kinds it can resolve; a bad item fails at flag parsing with
the reason, e.g. ``--tiers=phone:0.75`` -> "expected name=kind:value ...".
"""
from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from omni_tf.supernet import TIER_KINDS, TierSpec, parse_tiers


class _TiersParser(flags.ArgumentParser):
    def __init__(self, kinds: Sequence[str]):
        self.kinds = tuple(kinds)

    def parse(self, argument) -> dict[str, TierSpec]:
        if isinstance(argument, dict):
            return argument
        items = argument if isinstance(argument, list | tuple) else [a for a in argument.split(",") if a]
        return parse_tiers([a.strip() for a in items], self.kinds)

    def flag_type(self) -> str:
        return "tiers"


class _TiersSerializer(flags.ArgumentSerializer):
    def serialize(self, value) -> str:
        return ",".join(f"{name}={spec}" for name, spec in value.items())


def define_tiers_flag(default: Sequence[str], help_text: str, kinds: Sequence[str] = TIER_KINDS,
                      name: str = "tiers", flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines ``--<name>`` (in ``flag_values``) whose value is ``{tier name: TierSpec}`` (``default``: items
    as on the command line, ``[]`` for none)."""
    kinds_text = ", ".join(f"{k}:" for k in kinds)
    flags.DEFINE(_TiersParser(kinds), name, ",".join(default), f"{help_text} Items name=kind:value, kind one "
                 f"of {kinds_text} (sparsity: uniform sparsity; bytes: fraction of the dense int8 bytes; "
                 "level: index into the level set).", serializer=_TiersSerializer(), flag_values=flag_values)
