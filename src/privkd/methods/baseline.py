"""The prevalent-only baseline (the lower bound): the task loss on the prevalent modalities alone."""

from __future__ import annotations

from privkd.config.schema import RunConfig
from privkd.data.h5format import DatasetInfo
from privkd.methods.base import PrivkdModule, common_arguments
from privkd.methods.registry import register_method
from privkd.models.build import build_net
from privkd.models.network import PrivilegedNet


@register_method("baseline", role="baseline", bound="lower")
class BaselineModule(PrivkdModule):
    """The base module's task loss on a network that sees and fuses the prevalent modalities."""

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> BaselineModule:
        return cls(build_net("baseline", cfg, info), **common_arguments(cfg, info))
