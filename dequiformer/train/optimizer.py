"""The force-field trainer's optimizer: AdamW with weight decay on all but the exempt kinds of
parameters (norms, biases, embeddings by default, as EquiformerV2 does)."""
from __future__ import annotations

from typing import Any, Mapping

import torch

__all__ = ["build_optimizer", "parameter_groups"]


def parameter_groups(model: torch.nn.Module, weight_decay: float,
                     exempt: tuple[str, ...] | list[str] = ("norm", "bias", "embedding")) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay except for the ``exempt`` kinds.

    Kinds: ``norm`` (parameters of any module whose class name contains "Norm"), ``bias``
    (names ending in ``bias`` and other 1-d parameters), ``embedding`` (``torch.nn.Embedding``).
    Each group carries ``names`` for inspection.
    """
    exempt = {str(e).lower() for e in exempt}
    unknown = exempt - {"norm", "bias", "embedding"}
    if unknown:
        raise ValueError(f"train.no_weight_decay: unknown kind(s) {sorted(unknown)}; valid: norm, bias, embedding")
    modules = dict(model.named_modules())
    groups = {"decay": ([], []), "no_decay": ([], [])}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner = modules[name.rpartition(".")[0]]
        is_norm = "norm" in type(owner).__name__.lower()
        is_bias = name.endswith("bias") or p.ndim <= 1
        is_embedding = isinstance(owner, torch.nn.Embedding)
        skip = ("norm" in exempt and is_norm) or ("bias" in exempt and is_bias) or ("embedding" in exempt and is_embedding)
        names, params = groups["no_decay" if skip else "decay"]
        names.append(name)
        params.append(p)
    out = []
    for key, (names, params) in groups.items():
        if params:
            out.append({"params": params, "names": names, "weight_decay": float(weight_decay) if key == "decay" else 0.0})
    return out


def build_optimizer(model: torch.nn.Module, tcfg: Mapping[str, Any]) -> torch.optim.AdamW:
    """AdamW from the resolved ``train`` section (``lr``, ``betas``, ``eps``, ``weight_decay``,
    ``no_weight_decay``); the learning rate is then driven by the schedule."""
    groups = parameter_groups(model, tcfg["weight_decay"], tcfg["no_weight_decay"] or ())
    return torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=float(tcfg["lr"]),
                             betas=tuple(tcfg["betas"]), eps=float(tcfg["eps"]))
