"""Evaluation loop shared by validation during training and ``dequiformer eval``."""
from __future__ import annotations

import re
import time
from typing import Any, Sequence

import numpy as np
import torch

from .dataset import GraphDataset
from .distributed import DistInfo, all_reduce_dict
from .losses import error_sums


def shard_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """Unshuffled batches of this rank's share ``rank, rank + W, ...`` of ``range(n)`` (every
    index evaluated exactly once over all ranks; ranks may get different counts)."""
    idx = np.arange(n)[rank::world_size]
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]


def stress_request(model: torch.nn.Module, graph: Any) -> dict[str, bool]:
    """``{"stress": True}`` when the batch has stress labels on 3D-periodic cells and the model
    is conservative (its stress is then an energy derivative worth reporting), else ``{}``."""
    if graph.stress is None or not getattr(model, "conservative", False) or not bool(graph.pbc.all()):
        return {}
    return {"stress": True}


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """MAEs and solver statistics from summed error terms (see :func:`losses.error_sums`)."""
    def ratio(a: str, b: str) -> float:
        return sums.get(a, 0.0) / sums[b] if sums.get(b) else float("nan")

    return {
        "n_structures": int(sums.get("n_energy", 0)),
        "energy_mae": ratio("energy_abs", "n_energy"),
        "forces_mae": ratio("forces_abs", "n_forces"),
        "stress_mae": ratio("stress_abs", "n_stress"),
        "mean_steps": ratio("steps", "n_steps"),
        "max_steps": int(sums.get("max_steps", 0)),
        "unconverged": int(sums.get("unconverged", 0)),
        "seconds": float(sums.get("seconds", 0.0)),
    }


@torch.no_grad()
def evaluate(model: torch.nn.Module, graphs: GraphDataset, batch_size: int, device: torch.device | str = "cpu",
             info: DistInfo | None = None, indices: Sequence[int] | None = None) -> dict[str, float]:
    """Energy/force MAE (training units) and solver statistics of ``model`` on ``graphs``.

    The model is put in eval mode for the loop and restored to its previous mode after.
    Under DDP each rank evaluates its share and the sums are reduced. ``seconds`` is the wall
    time of the model forwards (graph building excluded), summed over ranks.
    """
    info = info or DistInfo()
    n = len(graphs) if indices is None else len(indices)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    try:
        for batch in shard_batches(n, batch_size, info.rank, info.world_size):
            ids = batch if indices is None else [indices[int(i)] for i in batch]
            graph = graphs.batch(ids, device)
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                out = model(graph, **stress_request(model, graph))
            except ValueError as exc:  # the model names batch positions ("structure 2"): name the frames
                raise ValueError(re.sub(r"structure (\d+)", lambda m: graphs.frame_label(ids[int(m.group(1))]),
                                        str(exc))) from exc
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            part = error_sums(out, graph)
            part["seconds"] = elapsed
            for key, value in part.items():
                if key == "max_steps":
                    sums[key] = max(sums.get(key, 0.0), value)
                else:
                    sums[key] = sums.get(key, 0.0) + value
    finally:
        model.train(was_training)
    if info.enabled:
        local_max = sums.pop("max_steps", 0.0)
        sums = all_reduce_dict(sums, info)
        from .distributed import all_gather_object

        sums["max_steps"] = max(all_gather_object(local_max, info))
    return summarize(sums)


def eval_record(summary: dict[str, Any], units: dict[str, str]) -> dict[str, Any]:
    """The JSON object of ``dequiformer eval`` from an :func:`evaluate` summary (``stress_mae``
    in energy unit / A^3 when the data had stress labels and the model gives a stress)."""
    n = int(summary["n_structures"])
    record = {
        "n_structures": n,
        "energy_mae": float(summary["energy_mae"]),
        "forces_mae": float(summary["forces_mae"]),
        "units": {"energy": units.get("energy"), "length": units.get("length", "Angstrom"),
                  "forces": f"{units.get('energy')}/{units.get('length', 'Angstrom')}"},
        "solver": {"mean_steps": float(summary["mean_steps"]), "max_steps": int(summary["max_steps"]),
                   "unconverged": int(summary["unconverged"])},
        "seconds_per_structure": float(summary["seconds"]) / n if n else float("nan"),
    }
    stress = summary.get("stress_mae")
    if stress is not None and stress == stress:
        record["stress_mae"] = float(stress)
        record["units"]["stress"] = f"{units.get('energy')}/{units.get('length', 'Angstrom')}^3"
    return record
