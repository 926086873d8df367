"""Markov check: do warm-started forces match cold solves along a trajectory?

Fixed-point reuse makes a DEQ's output depend, within the solver tolerance, on the history
of the trajectory (the previous fixed point is the starting guess). This check walks N
consecutive frames of a data set twice: with a reuse calculator (warm start from the
previous frame, solved to ``reuse_tol``) and with a cold calculator (``fp_reuse=False``,
solved to ``tol`` from zero every time), and compares energies and forces. The DEQuiformer
paper reports a mean relative force difference below 1 %.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..calculator import DEQCalculator
from ..data.readers import FrameDataset
from .structures import check_frame_index


class NotADEQError(ValueError):
    """The model has no implicit layer (an explicit EquiformerV2): nothing is reused."""


def require_deq(model: torch.nn.Module, where: str = "model") -> None:
    """Raise :class:`NotADEQError` unless ``model`` is a DEQ (has an implicit layer)."""
    if not model.is_implicit:
        raise NotADEQError(f"{where}: is an explicit EquiformerV2 model (model.name "
                           f"{getattr(model, 'hparams', {}).get('name', 'equiformer_v2')!r}); the Markov check "
                           f"compares warm-started and cold fixed-point solves and needs a DEQuiformer checkpoint "
                           f"(model.name 'dequiformer')")


def markov_check(
    model: torch.nn.Module,
    dataset: FrameDataset,
    frames: int = 100,
    start: int = 0,
    tol: float = 1e-4,
    reuse_tol: float | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    progress: bool = True,
    where: str = "model",
    max_iter: int | None = None,
    predictor: int | None = None,
    correctors: int | None = None,
    secant_memory: int | None = None,
) -> dict[str, Any]:
    """Compare reuse and cold solves on frames ``start .. start+frames-1`` of ``dataset``.

    The first frame of the walk is a cold solve for both calculators, so the statistics run
    over the ``frames - 1`` warm-started frames: ``force_rel_diff`` per frame is
    ``||F_reuse - F_cold||_F / ||F_cold||_F`` (mean and max), ``energy_abs_diff_mean`` is in eV,
    ``mean_steps_reuse`` averages the warm solves and ``mean_steps_cold`` all cold solves
    (solver steps = layer-block evaluations). ``start_error_mean`` and ``fixed_point_motion_mean``
    average, over the warm solves, the distance of the predicted start from the fixed point reached
    and the fixed point's move since the previous frame, both relative to its norm.

    Raises:
        NotADEQError: ``model`` is explicit. IndexError: the frame range is outside the data
        (names the file). ValueError: ``frames < 2``.
    """
    from tqdm import tqdm

    require_deq(model, where)
    if frames < 2:
        raise ValueError(f"the Markov check needs at least 2 frames, got {frames}")
    n = len(dataset)
    first = check_frame_index(start, n, dataset.source)
    check_frame_index(first + frames - 1, n, dataset.source)
    cold = DEQCalculator(model, device=device, fp_reuse=False, tol=tol, reuse_tol=reuse_tol, dtype=dtype,
                         max_iter=max_iter)
    reuse = DEQCalculator(model, device=device, fp_reuse=True, tol=tol, reuse_tol=reuse_tol, dtype=dtype,
                          max_iter=max_iter, predictor=predictor, correctors=correctors, secant_memory=secant_memory)
    rel, de, steps_cold, steps_reuse, unconverged = [], [], [], [], 0
    motion: dict[str, list[float]] = {"start_error": [], "fixed_point_motion": []}
    for k in tqdm(range(first, first + frames), desc="Markov check", unit="frame", disable=not progress):
        atoms = dataset[k].to_atoms()
        results = {}
        for name, calc in (("reuse", reuse), ("cold", cold)):
            energy = calc.get_potential_energy(atoms)
            forces = np.array(calc.get_forces(atoms), dtype=float)
            results[name] = (energy, forces, dict(calc.stats))
            unconverged += not calc.stats.get("converged", True)
        (e_r, f_r, s_r), (e_c, f_c, s_c) = results["reuse"], results["cold"]
        steps_cold.append(s_c["solver_steps"])
        if k == first:
            continue
        steps_reuse.append(s_r["solver_steps"])
        for key in motion:
            if key in s_r:
                motion[key].append(s_r[key])
        rel.append(float(np.linalg.norm(f_r - f_c) / max(np.linalg.norm(f_c), 1e-12)))
        de.append(abs(float(e_r) - float(e_c)))
    return {
        "frames": int(frames),
        "force_rel_diff_mean": float(np.mean(rel)),
        "force_rel_diff_max": float(np.max(rel)),
        "energy_abs_diff_mean": float(np.mean(de)),
        "mean_steps_cold": float(np.mean(steps_cold)),
        "mean_steps_reuse": float(np.mean(steps_reuse)),
        "start": int(first),
        "tol": float(tol),
        "reuse_tol": float(reuse.reuse_tol),
        "predictor": int(reuse.predictor.history),
        "correctors": reuse.settings.correctors,
        "secant_memory": reuse.settings.secant_memory,
        "energy_units": "eV",
        "unconverged_solves": int(unconverged),
        "force_rel_diff_per_frame": rel,
        # how far the warm starts were from the fixed point they reached, and how far that fixed
        # point moved from the previous frame's (relative norms; see deq.predictor.fixed_point_motion)
        **{f"{key}_mean": float(np.mean(v)) if v else None for key, v in motion.items()},
    }
