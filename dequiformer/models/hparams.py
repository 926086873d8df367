"""Model hyperparameters: EquiformerV2 names, defaults and validation."""
from __future__ import annotations

from typing import Any

# EquiformerV2 hyperparameter names (fairchem v1) plus the few this package adds.
DEFAULTS: dict[str, Any] = {
    "name": "equiformer_v2",
    "num_layers": 12,
    "lmax": 6,
    "mmax": 2,
    "sphere_channels": 128,
    "attn_hidden_channels": 128,
    "num_heads": 8,
    "attn_alpha_channels": 32,
    "attn_value_channels": 16,
    "ffn_hidden_channels": 512,
    "edge_channels": 128,
    "num_radial_basis": 512,
    "grid_resolution": None,
    "cutoff": 12.0,
    "max_neighbors": 20,
    "max_num_elements": 90,
    "norm_type": "rms_norm_sh",
    "alpha_drop": 0.1,
    "path_drop": 0.05,
    "proj_drop": 0.0,
    "use_grid_mlp": False,
    "use_sep_s2_act": True,
    "use_gate_act": False,
    "use_atom_edge_embedding": True,
    "avg_num_nodes": 77.81317,
    "avg_degree": 23.395238876342773,
    # additions
    "norm_placement": "pre",          # pre | pre_post (norms before and after each sublayer)
    "use_envelope": True,             # smooth polynomial cutoff on edges (MD needs continuity)
    "envelope_exponent": 5,
    "basis_width_scalar": 2.0,
    # energy readout: per-atom energies summed and divided by avg_num_nodes (EquiformerV2), or
    # summed (MACE / NequIP); the head's last layer at torch's init ("default") or at zero, so
    # that training starts from the per-element reference energies exactly
    "energy_pooling": "avg_num_nodes",  # avg_num_nodes | sum
    "energy_head_init": "default",      # default | zero
    # forces: the direct (equivariant, l = 1) head's output, or the exact negative gradient of
    # the energy -dE/dpos (energy-conserving MD, stress for periodic cells; costs a backward
    # pass, and through a DEQ's fixed point one adjoint solve)
    "forces": "direct",               # direct | conservative
    "task": "regression",             # regression (energy + forces) | classification
    "num_classes": 0,
    "energy_units": "eV",
    "length_units": "Angstrom",
}

NAMES = ("equiformer_v2", "dequiformer")


def resolve(model_cfg: dict) -> dict:
    """Fill defaults and check names, types and ranges; errors name the offending key."""
    cfg = dict(model_cfg or {})
    name = cfg.get("name", "equiformer_v2")
    if name not in NAMES:
        raise ValueError(f"model.name must be one of {NAMES}, got {name!r}")
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; valid keys: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    if name == "dequiformer":
        out.setdefault("norm_placement", "pre_post")
        if "norm_placement" not in cfg:
            out["norm_placement"] = "pre_post"
        if "num_layers" not in cfg:
            out["num_layers"] = 1
    for key in ("num_layers", "lmax", "mmax", "sphere_channels", "attn_hidden_channels", "num_heads",
                "attn_alpha_channels", "attn_value_channels", "ffn_hidden_channels", "edge_channels",
                "num_radial_basis", "max_num_elements"):
        if not isinstance(out[key], int) or out[key] < (0 if key in ("lmax", "mmax") else 1):
            raise ValueError(f"model.{key} must be a positive integer, got {out[key]!r}")
    if out["mmax"] > out["lmax"]:
        raise ValueError(f"model.mmax ({out['mmax']}) must not exceed model.lmax ({out['lmax']})")
    if out["lmax"] < 1:
        raise ValueError("model.lmax must be >= 1 (forces are read from the l = 1 coefficients)")
    if float(out["cutoff"]) <= 0:
        raise ValueError(f"model.cutoff must be > 0 Angstrom, got {out['cutoff']}")
    if out["norm_placement"] not in ("pre", "pre_post"):
        raise ValueError(f"model.norm_placement must be 'pre' or 'pre_post', got {out['norm_placement']!r}")
    for key, valid in (("energy_pooling", ("avg_num_nodes", "sum")), ("energy_head_init", ("default", "zero")),
                       ("forces", ("direct", "conservative"))):
        if out[key] not in valid:
            raise ValueError(f"model.{key} must be one of {valid}, got {out[key]!r}")
    if out["task"] not in ("regression", "classification"):
        raise ValueError(f"model.task must be 'regression' or 'classification', got {out['task']!r}")
    if out["task"] == "classification" and int(out["num_classes"]) < 2:
        raise ValueError("model.num_classes must be >= 2 for task: classification")
    if name == "dequiformer" and out["num_layers"] not in (1, 2):
        raise ValueError(f"dequiformer's implicit layer holds 1 or 2 blocks (model.num_layers), got {out['num_layers']}")
    return out
