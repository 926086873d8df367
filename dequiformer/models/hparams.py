"""Model hyperparameters: EquiformerV2 names, defaults and validation."""
from __future__ import annotations

from typing import Any

from ..schema import Option, defaults, resolve_section

NAMES = ("equiformer_v2", "dequiformer")
_POSITIVE_INT = {"low": 1}
_DROP = {"low": 0.0, "high": 1.0, "high_open": True}

# EquiformerV2 hyperparameter names (fairchem v1) plus the few this package adds.
MODEL_SCHEMA: dict[str, Option] = {
    "name": Option("equiformer_v2", str, choices=NAMES),
    "num_layers": Option(12, int, **_POSITIVE_INT),
    "lmax": Option(6, int, low=1),  # forces are read from the l = 1 coefficients
    "mmax": Option(2, int, low=0),
    "sphere_channels": Option(128, int, **_POSITIVE_INT),
    "attn_hidden_channels": Option(128, int, **_POSITIVE_INT),
    "num_heads": Option(8, int, **_POSITIVE_INT),
    "attn_alpha_channels": Option(32, int, **_POSITIVE_INT),
    "attn_value_channels": Option(16, int, **_POSITIVE_INT),
    "ffn_hidden_channels": Option(512, int, **_POSITIVE_INT),
    "edge_channels": Option(128, int, **_POSITIVE_INT),
    "num_radial_basis": Option(512, int, **_POSITIVE_INT),
    "grid_resolution": Option(None, int, nullable=True, low=1),
    "cutoff": Option(12.0, float, low=0, low_open=True),  # Angstrom
    "max_neighbors": Option(20, int, nullable=True, **_POSITIVE_INT),  # null: no cap
    "max_num_elements": Option(90, int, **_POSITIVE_INT),
    "norm_type": Option("rms_norm_sh", str),
    "alpha_drop": Option(0.1, float, **_DROP),
    "path_drop": Option(0.05, float, **_DROP),
    "proj_drop": Option(0.0, float, **_DROP),
    "use_grid_mlp": Option(False, bool),
    "use_sep_s2_act": Option(True, bool),
    "use_gate_act": Option(False, bool),
    "use_atom_edge_embedding": Option(True, bool),
    # how the attention combines an atom's incoming messages: EquiformerV2's softmax over them
    # (a weighted average: how many neighbours sit at a distance is lost), or "sum": each
    # message gated by a sigmoid of its logit and summed, divided by avg_degree (eSCN's and
    # MACE's sum over neighbours, which counts them)
    "attn_aggregation": Option("softmax", str, choices=("softmax", "sum")),
    # mean atoms per structure and neighbours per atom of the training set (the energy's and the
    # messages' normalisers); null where a caller fills them from the data
    "avg_num_nodes": Option(77.81317, float, low=0, low_open=True, nullable=True),
    "avg_degree": Option(23.395238876342773, float, low=0, low_open=True, nullable=True),
    # additions
    "norm_placement": Option("pre", str, choices=("pre", "pre_post")),  # norms before (and after) each sublayer
    "use_envelope": Option(True, bool),  # smooth polynomial cutoff on edges (MD needs continuity)
    "envelope_exponent": Option(5, int, **_POSITIVE_INT),
    "basis_width_scalar": Option(2.0, float, low=0, low_open=True),
    # energy readout: per-atom energies summed and divided by avg_num_nodes (EquiformerV2), or
    # summed (MACE / NequIP); the head's last layer at torch's init ("default") or at zero, so
    # that training starts from the per-element reference energies exactly
    "energy_pooling": Option("avg_num_nodes", str, choices=("avg_num_nodes", "sum")),
    "energy_head_init": Option("default", str, choices=("default", "zero")),
    # forces: the direct (equivariant, l = 1) head's output, or the exact negative gradient of
    # the energy -dE/dpos (energy-conserving MD, stress for periodic cells; costs a backward
    # pass, and through a DEQ's fixed point one adjoint solve)
    "forces": Option("direct", str, choices=("direct", "conservative")),
    "task": Option("regression", str, choices=("regression", "classification")),  # energy + forces, or classes
    "num_classes": Option(0, int, low=0),
    "energy_units": Option("eV", str),
    "length_units": Option("Angstrom", str),
}
DEFAULTS: dict[str, Any] = defaults(MODEL_SCHEMA)
# the DEQuiformer's own defaults: one block, norms before and after each sublayer
IMPLICIT_DEFAULTS: dict[str, Any] = {"num_layers": 1, "norm_placement": "pre_post"}


def resolve(model_cfg: dict) -> dict:
    """Fill defaults and check names, types and ranges (:data:`MODEL_SCHEMA`); errors name the
    offending key."""
    cfg = dict(model_cfg or {})
    name = cfg.get("name", "equiformer_v2")
    if name not in NAMES:
        raise ValueError(f"model.name must be one of {NAMES}, got {name!r}")
    if name == "dequiformer":
        cfg = {**IMPLICIT_DEFAULTS, **cfg}
    out = resolve_section("model", cfg, MODEL_SCHEMA)
    if out["mmax"] > out["lmax"]:
        raise ValueError(f"model.mmax ({out['mmax']}) must not exceed model.lmax ({out['lmax']})")
    if out["task"] == "classification" and out["num_classes"] < 2:
        raise ValueError("model.num_classes must be >= 2 for task: classification")
    if name == "dequiformer" and out["num_layers"] not in (1, 2):
        raise ValueError(f"dequiformer's implicit layer holds 1 or 2 blocks (model.num_layers), got {out['num_layers']}")
    return out
