"""Models: explicit EquiformerV2, implicit DEQuiformer, DEQ conv classifier; ``build_model``."""
from __future__ import annotations

import torch

from .hparams import DEFAULTS, resolve


def build_model(model_cfg: dict, deq_cfg: dict | None = None) -> torch.nn.Module:
    """Build a model from the ``model`` (and ``deq``) config sections.

    ``model_cfg["name"]``: ``"equiformer_v2"`` (explicit, ``num_layers`` blocks) or
    ``"dequiformer"`` (one implicit layer of 1-2 blocks solved to its fixed point).
    Parameters are created in torch's default dtype; use ``model.double()`` for float64.
    """
    name = (model_cfg or {}).get("name", "equiformer_v2")
    if name == "equiformer_v2":
        from .equiformer_v2 import EquiformerV2

        return EquiformerV2(model_cfg)
    if name == "dequiformer":
        from .dequiformer import DEQuiformer

        return DEQuiformer(model_cfg, deq_cfg)
    resolve(model_cfg)  # raises the descriptive error
    raise AssertionError("unreachable")


__all__ = ["DEFAULTS", "build_model", "resolve"]
