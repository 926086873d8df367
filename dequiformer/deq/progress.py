"""Bookkeeping shared by all solvers: per-graph residuals, stopping, freezing.

Semantics (identical for every solver in this package):

* ``f`` is evaluated on the full batch; each call counts once in ``nfe``.
* After each evaluation ``f(z_k)`` the relative residual of every graph,
  ``r_g = ||f(z_k) - z_k||_g / (||f(z_k)||_g + eps)``, is computed.
* The value a graph returns is ``f(z_k)`` at its accepted iterate ``z_k``: the first
  one with ``r_g < tol`` (then the graph has converged and ``steps[g] = k + 1``), or
  the one with the lowest residual seen when ``max_iter`` is reached.
* A solver may also finish a graph at an iterate it has not evaluated, whose residual it
  predicts below ``tol`` (:meth:`SolverProgress.accept`; Anderson with a carried secant
  memory): ``steps`` is then the evaluations made, ``residual`` the predicted one.
* A graph that has converged is frozen: its rows of every later solver iterate are
  its returned value, and the solver's history for it is ignored.
* Non-finite values from ``f``: a graph whose rows of ``f(z_k)`` contain NaN/inf is
  flagged failed (``converged=False``, ``residual=inf``, ``steps`` = the evaluation
  that failed) and frozen at its best finite value so far (its rows of ``z0`` if
  there is none). The other graphs carry on. Nothing non-finite is ever returned.
* A non-finite initial iterate ``z0`` is refused (``ValueError``); ``max_iter >= 1``.
"""
from __future__ import annotations

import torch

from .graph_ops import graph_any, graph_norm, rows
from .stats import SolverStats

__all__ = ["SolverProgress", "StateSampler"]


class StateSampler:
    """Keeps O(n) detached iterates, roughly evenly spaced over an unknown run length.

    Iterates are kept at multiples of a stride that doubles whenever more than
    ``4 (n + 1)`` are held, so memory stays bounded however long the solve runs.
    """

    def __init__(self, n_states: int) -> None:
        self.n = int(n_states)
        self.stride = 1
        self.items: list[tuple[int, torch.Tensor]] = []

    def add(self, t: int, z: torch.Tensor) -> None:
        """Offer the iterate fed to evaluation ``t + 1`` (``t >= 1``)."""
        if self.n <= 0 or t % self.stride:
            return
        self.items.append((t, z.detach()))
        if len(self.items) > 4 * (self.n + 1):
            self.stride *= 2
            self.items = [(s, x) for s, x in self.items if s % self.stride == 0]

    def pick(self, total: int, final: torch.Tensor) -> list[torch.Tensor]:
        """``n`` iterates nearest to ``i * total / (n + 1)``, ``i = 1..n``; ``final`` counts as ``t = total``."""
        if self.n <= 0:
            return []
        candidates = self.items + [(total, final.detach())]
        out = []
        for i in range(1, self.n + 1):
            target = i * total / (self.n + 1)
            out.append(min(candidates, key=lambda item: abs(item[0] - target))[1])
        return out


class SolverProgress:
    """Per-graph state of a batched solve on flattened iterates ``[N, D]``.

    Args:
        z0: ``[N, D]`` initial iterate (also the fallback value of failed graphs).
        graph_index: ``[N]`` long graph of each row.
        num_graphs: ``B``.
        tol, max_iter, eps: see the solvers.
        trace: keep a ``[B]`` residual tensor per evaluation.
        n_states: number of intermediate iterates to return.
    """

    def __init__(
        self,
        z0: torch.Tensor,
        graph_index: torch.Tensor,
        num_graphs: int,
        tol: float,
        max_iter: int,
        eps: float,
        trace: bool = False,
        n_states: int = 0,
    ) -> None:
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if not torch.isfinite(z0).all():
            raise ValueError("initial iterate z0 contains non-finite values")
        self.graph_index = graph_index
        self.num_graphs = num_graphs
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.eps = float(eps)
        device = z0.device
        self.nfe = 0
        self.done = torch.zeros(num_graphs, dtype=torch.bool, device=device)
        self.converged = torch.zeros_like(self.done)
        self.failed = torch.zeros_like(self.done)
        self.steps = torch.full((num_graphs,), self.max_iter, dtype=torch.long, device=device)
        self.best_residual = torch.full((num_graphs,), float("inf"), dtype=z0.dtype, device=device)
        self.best = z0.detach().clone()
        self.trace: list[torch.Tensor] | None = [] if trace else None
        self.sampler = StateSampler(n_states)
        self.all_done = num_graphs == 0
        self.any_done = False

    def _done_rows(self) -> torch.Tensor:
        return rows(self.done, self.graph_index).unsqueeze(1)

    def evaluate(self, g, z: torch.Tensor) -> torch.Tensor:
        """``g(z)`` [N, D]; only on the rows of unfinished graphs when ``g`` supports it
        (``g.rows``, see :func:`~dequiformer.deq.forward.flat_map`). Finished graphs' rows are
        replaced by their frozen values in :meth:`observe` either way."""
        partial = getattr(g, "rows", None)
        if partial is not None and self.any_done:
            return partial(z, ~rows(self.done, self.graph_index))
        return g(z)

    def observe(self, z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
        """Record one evaluation ``fz = f(z)`` (both ``[N, D]``).

        Updates residuals, best values, convergence and failure flags, and returns
        ``fz`` with the rows of finished graphs replaced by their frozen value (so a
        solver's history never holds non-finite numbers).
        """
        self.nfe += 1
        gi, nb = self.graph_index, self.num_graphs
        bad_rows = ~torch.isfinite(fz).all(dim=1)
        finite = ~graph_any(bad_rows, gi, nb)
        diff = fz - z  # non-finite rows give a non-finite norm, replaced by inf below
        residual = graph_norm(diff, gi, nb) / (graph_norm(fz, gi, nb) + self.eps)
        residual = torch.where(finite, residual, torch.full_like(residual, float("inf")))

        active = ~self.done
        improved = active & finite & (residual < self.best_residual)
        self.best_residual = torch.where(improved, residual, self.best_residual)
        newly_converged = active & finite & (residual < self.tol)
        newly_failed = active & ~finite
        finished = newly_converged | newly_failed
        self.steps = torch.where(finished, torch.full_like(self.steps, self.nfe), self.steps)
        self.converged |= newly_converged
        self.failed |= newly_failed
        self.done |= finished
        # the one host synchronisation per iteration: all flags from one transfer. The two last
        # let the common iteration (every row finite, every graph improved) skip full-size
        # selections: on wide iterates those passes over memory cost as much as the mixing
        flags = torch.stack([self.done.all(), self.done.any(), bad_rows.any(), improved.all()])
        self.all_done, self.any_done, any_bad, all_improved = (bool(v) for v in flags.tolist())
        fz_safe = torch.where(bad_rows.unsqueeze(1), z, fz) if any_bad else fz
        if all_improved and not any_bad:
            self.best = fz_safe  # (never written in place: the solvers build new iterates)
        else:
            self.best = torch.where(rows(improved, gi).unsqueeze(1), fz_safe, self.best)

        if self.trace is not None:
            self.trace.append(torch.where(active, residual, self.final_residual()).clone())
        return torch.where(self._done_rows(), self.best, fz_safe) if self.any_done else fz_safe

    def accept(self, mask: torch.Tensor, values: torch.Tensor, residual: torch.Tensor) -> None:
        """Finish the unfinished graphs of ``mask`` ``[B]`` as converged at ``values`` ``[N, D]`` (an
        iterate not evaluated, whose ``residual`` ``[B]`` a solver predicted below ``tol``);
        ``steps`` = the evaluations made so far. One host synchronisation, like :meth:`observe`."""
        mask = mask & ~self.done & torch.isfinite(residual)
        self.best = torch.where(rows(mask, self.graph_index).unsqueeze(1), values, self.best)
        self.best_residual = torch.where(mask, residual, self.best_residual)
        self.steps = torch.where(mask, torch.full_like(self.steps, self.nfe), self.steps)
        self.converged |= mask
        self.done |= mask
        flags = torch.stack([self.done.all(), self.done.any()])
        self.all_done, self.any_done = (bool(v) for v in flags.tolist())

    def freeze(self, z_next: torch.Tensor) -> torch.Tensor:
        """Overwrite the rows of finished graphs in the next iterate ``[N, D]`` and offer it to the sampler."""
        z_next = torch.where(self._done_rows(), self.best, z_next)
        self.sampler.add(self.nfe, z_next)
        return z_next

    def final_residual(self) -> torch.Tensor:
        """``[B]``: best residual, ``inf`` for failed graphs."""
        return torch.where(self.failed, torch.full_like(self.best_residual, float("inf")), self.best_residual)

    def finish(self, shape: torch.Size) -> tuple[torch.Tensor, SolverStats]:
        """Returned value ``[N, *feat]`` and the statistics."""
        z_star = self.best.reshape(shape)
        states = [s.reshape(shape) for s in self.sampler.pick(self.nfe, self.best)]
        stats = SolverStats(
            steps=self.steps,
            residual=self.final_residual(),
            converged=self.converged.clone(),
            nfe=self.nfe,
            trace=self.trace,
            states=states,
        )
        return z_star, stats
