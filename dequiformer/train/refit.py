"""Re-fit a trained model's per-element energy references on its training frames.

A DEQ trained with capped solves (``deq.train_max_iter``) or whose layer was reshaped late (a
contractive fine-tune) calibrates its energy head on fixed points that differ slightly from the
converged ones it is evaluated with; forces barely notice, but the total energy, a sum over
atoms, picks up a constant offset (session 9: 1.26 kcal/mol on the demo's training frames, 1.97
on the held-out trajectory, against 0.05 for a run with a firmer radius hinge). Re-fitting the
references with the inference solver removes the part of it that the training data shows:
``E = E_model + sum_atoms delta[Z]`` with ``delta`` the least-squares (minimum-norm) solution of
``counts @ delta = E_label - E_model``. For data of one composition (an MD trajectory) that is
one constant shift, spread over the elements present.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .dataset import GraphDataset
from .evaluate import shard_batches

__all__ = ["refit_energy_references"]


@torch.no_grad()
def _energies(model: torch.nn.Module, graphs: GraphDataset, batch_size: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Predicted and labelled energies [B] (training units) and each structure's atomic numbers."""
    pred, label, numbers = [], [], []
    for idx in shard_batches(len(graphs), batch_size):
        batch = graphs.batch(idx)
        out = model(batch)
        pred.append(out["energy"].double().cpu().numpy())
        label.append(batch.energy.double().cpu().numpy())
        counts = torch.bincount(batch.batch, minlength=batch.num_graphs).tolist()
        numbers += list(torch.split(batch.atomic_numbers.cpu(), counts))
    return np.concatenate(pred), np.concatenate(label), numbers


def refit_energy_references(model: torch.nn.Module, graphs: GraphDataset, batch_size: int = 4) -> dict[str, Any]:
    """Shift ``model.scaling.energy_reference`` (in place) so that its energies on ``graphs`` have
    the least-squares per-element offset removed.

    ``graphs`` must carry energy labels in the model's units. Returns ``{"n_structures",
    "energy_mae_before", "energy_mae_after", "mean_error_before", "delta": {Z: shift}}`` (energy
    unit of the model; ``delta`` per atom of element Z)."""
    if len(graphs) == 0:
        raise ValueError("no structures to re-fit the energy references on")
    was_training = model.training
    model.eval()
    try:
        pred, label, numbers = _energies(model, graphs, batch_size)
    finally:
        model.train(was_training)
    elements = sorted({int(z) for zs in numbers for z in zs.tolist()})
    refs = model.scaling.energy_reference
    if elements[-1] >= refs.numel():
        raise ValueError(f"element Z={elements[-1]} is beyond the model's max_num_elements={refs.numel()}")
    counts = np.zeros((len(numbers), len(elements)))
    column = {z: j for j, z in enumerate(elements)}
    for i, zs in enumerate(numbers):
        for z in zs.tolist():
            counts[i, column[int(z)]] += 1
    residual = label - pred
    delta, *_ = np.linalg.lstsq(counts, residual, rcond=None)
    with torch.no_grad():
        for z, shift in zip(elements, delta):
            refs[z] += float(shift)
    after = residual - counts @ delta
    return {"n_structures": len(numbers), "energy_mae_before": float(np.abs(residual).mean()),
            "energy_mae_after": float(np.abs(after).mean()), "mean_error_before": float(-residual.mean()),
            "delta": {int(z): float(s) for z, s in zip(elements, delta)}}
