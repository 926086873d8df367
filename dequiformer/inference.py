"""Inference settings shared by the ASE calculator and the TorchSim model: solver tolerances and
their defaults, the warm-start predictor, the model call's keyword arguments, and the conversion
of a model's outputs to eV, eV/A and eV/A^3. Neither ASE nor TorchSim is imported here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .data.units import energy_factor, length_factor
from .deq.predictor import EXTRAPOLATION

__all__ = ["OutputUnits", "SolveSettings"]


@dataclass(frozen=True)
class SolveSettings:
    """How a DEQ is solved at inference (explicit models ignore it).

    ``tol``: relative residual of cold solves. ``reuse_tol``: of warm-started solves (default: the
    model's own ``deq.reuse_tol``, which its training config or the shipped checkpoint sets for it:
    a conservative DEQ's sets its NVE drift). ``adjoint_tol``: of a conservative DEQ's adjoint
    (default: the call's own tolerance). ``max_iter``: solver cap (default: the model's
    ``deq.max_iter``). ``predictor``: past fixed points each warm start is extrapolated from
    (default: the model's ``deq.predictor``, or when that is null 3 for ``reuse_tol <= 1e-3`` and
    1 above; see :class:`~dequiformer.deq.predictor.FixedPointPredictor`). ``correctors``: where
    the last two fixed points extrapolate linearly, take exactly this many damped steps instead of
    solving to ``reuse_tol`` (ASPC, :mod:`dequiformer.deq.corrector`; default: the model's
    ``deq.correctors``, null = off); it implies ``predictor`` 2, the linear extrapolation ASPC's
    damping is made for. ``secant_memory``: secant pairs Anderson carries from one warm-started
    solve to the next (:mod:`dequiformer.deq.secant_memory`; default: the model's
    ``deq.secant_memory``; 0 or null = off).
    """

    tol: float
    reuse_tol: float
    adjoint_tol: float | None
    max_iter: int | None
    predictor: int
    correctors: int | None = None
    secant_memory: int | None = None

    @classmethod
    def for_model(cls, model: torch.nn.Module, tol: float = 1e-4, reuse_tol: float | None = None,
                  adjoint_tol: float | None = None, max_iter: int | None = None,
                  predictor: int | None = None, correctors: int | None = None,
                  secant_memory: int | None = None) -> "SolveSettings":
        """The settings for ``model`` with the package's defaults filled in and the values checked."""
        deq = model.deq_cfg if model.is_implicit else {}
        if reuse_tol is None:
            reuse_tol = deq.get("reuse_tol", 1e-1)
        if correctors is None:
            correctors = deq.get("correctors")
        if correctors is not None:
            if int(correctors) < 1:
                raise ValueError(f"correctors must be >= 1 (or None), got {correctors}")
            if predictor not in (None, 2):
                raise ValueError(f"correctors (ASPC) extrapolate linearly from the last two fixed points: they "
                                 f"need predictor 2, got predictor {predictor}")
            predictor = 2
        if predictor is None:
            predictor = deq.get("predictor")
        for name, value in (("tol", tol), ("reuse_tol", reuse_tol), ("adjoint_tol", adjoint_tol)):
            if value is not None and not float(value) > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if max_iter is not None and int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if predictor is None:  # extrapolation pays only for tight solves (measured, see the calculator)
            predictor = 3 if float(reuse_tol) <= 1e-3 else 1
        if predictor not in EXTRAPOLATION:
            raise ValueError(f"predictor history must be one of {sorted(EXTRAPOLATION)}, got {predictor!r}")
        if secant_memory is None:
            secant_memory = deq.get("secant_memory")
        if secant_memory is not None:
            if int(secant_memory) < 0:
                raise ValueError(f"secant_memory must be >= 0 (0: off), got {secant_memory}")
            if int(secant_memory) > 0 and deq.get("solver", "anderson") != "anderson":
                raise ValueError(f"secant_memory carries Anderson's history; this model solves with "
                                 f"deq.solver {deq.get('solver')!r}")
        return cls(float(tol), float(reuse_tol), None if adjoint_tol is None else float(adjoint_tol),
                   None if max_iter is None else int(max_iter), int(predictor),
                   None if correctors is None else int(correctors),
                   int(secant_memory) if secant_memory else None)

    def model_kwargs(self, model: torch.nn.Module, warm: bool, guess: dict[str, torch.Tensor] | None = None,
                     stress: bool = False, extrapolated: bool = False, memory: Any = None) -> dict[str, Any]:
        """Keyword arguments of ``model(graph, **kwargs)``: the warm starts in ``guess`` (``"z"``,
        ``"adjoint"``), the tolerance (``reuse_tol`` when ``warm``), caps and the adjoint's tolerance;
        with ``correctors`` set and a guess ``extrapolated`` from two fixed points, the corrector
        steps instead of a solve to ``reuse_tol``; a warm solve otherwise gets the caller's secant
        ``memory`` (a :class:`~dequiformer.deq.secant_memory.SecantMemory`) when given."""
        kwargs: dict[str, Any] = {"stress": True} if stress else {}
        if not model.is_implicit:
            return kwargs
        guess = guess or {}
        kwargs.update(z0=guess.get("z"), tol=self.reuse_tol if warm else self.tol)
        if self.correctors is not None and warm and extrapolated:
            kwargs["correctors"] = self.correctors
        elif memory is not None and warm:
            kwargs["secant_memory"] = memory
        if self.max_iter is not None:
            kwargs["max_iter"] = self.max_iter
        if getattr(model, "conservative", False):
            kwargs["adjoint0"] = guess.get("adjoint")
            kwargs["adjoint_tol"] = self.adjoint_tol if self.adjoint_tol is not None else kwargs["tol"]
        return kwargs


@dataclass(frozen=True)
class OutputUnits:
    """Factors from a model's training units to eV (energy), eV/A (forces), eV/A^3 (stress)."""

    energy: float
    forces: float
    stress: float

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> "OutputUnits":
        units = model.units
        e = energy_factor(units["energy"], "eV")
        length = length_factor(units["length"], "Angstrom")
        return cls(e, e / length, e / length**3)
