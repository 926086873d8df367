"""Solver benchmark: our per-graph Anderson vs forward iteration vs torchdeq's Anderson.

All three solve the same DEQuiformer layer on the same batch of molecules of different
sizes to the same relative tolerance per graph. torchdeq works on a dense [B, D] batch, so
its state is each graph's rows padded to the largest graph; its Anderson coefficients are per
row (= per graph) but it stops only when the worst graph has converged.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
from ase.build import molecule

from ..data.graph import AtomicGraph
from ..deq import fixed_point_with_grad
from ..device import synchronize

# 16 molecules from ASE's g2 set, 3 to 14 atoms
MOLECULES = [
    "H2O", "NH3", "CH4", "HCOOH", "CH3OH", "C2H4", "CH3CHO", "CH3CH2OH", "C2H6", "CH3COOH",
    "C3H6_Cs", "C4H4O", "C3H8", "C6H6", "trans-butane", "C5H5N",
]

BENCH_MODEL = dict(
    name="dequiformer", num_layers=1, lmax=3, mmax=2, sphere_channels=32, attn_hidden_channels=32, num_heads=4,
    attn_alpha_channels=16, attn_value_channels=8, ffn_hidden_channels=64, edge_channels=32, num_radial_basis=32,
    grid_resolution=10, cutoff=5.0, max_neighbors=None, max_num_elements=20, avg_num_nodes=9.0, avg_degree=8.0,
    alpha_drop=0.0, path_drop=0.0,
)


def bench_batch(cutoff: float, max_neighbors: int | None, dtype: torch.dtype, n: int = 16) -> AtomicGraph:
    names = (MOLECULES * ((n + len(MOLECULES) - 1) // len(MOLECULES)))[:n]
    return AtomicGraph.from_atoms([molecule(name) for name in names], cutoff=cutoff, max_neighbors=max_neighbors, dtype=dtype)


def _padded_map(f: Callable, batch: torch.Tensor, num_graphs: int, width: int) -> tuple[Callable, Callable, Callable]:
    """Packed [N, D] <-> padded [B, max_n * D] conversions and f on the padded layout."""
    counts = torch.bincount(batch, minlength=num_graphs)
    max_n = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(batch.numel(), device=batch.device) - starts[batch]

    def pad(z: torch.Tensor) -> torch.Tensor:
        out = z.new_zeros(num_graphs, max_n, width)
        out[batch, slot] = z
        return out.reshape(num_graphs, -1)

    def unpad(zp: torch.Tensor) -> torch.Tensor:
        return zp.reshape(num_graphs, max_n, width)[batch, slot]

    def f_padded(zp: torch.Tensor) -> torch.Tensor:
        return pad(f(unpad(zp)))

    return pad, unpad, f_padded


def run_solver_benchmark(model: torch.nn.Module, graph: AtomicGraph, tol: float = 1e-4, max_iter: int = 40,
                         repeats: int = 3) -> dict[str, Any]:
    """Solve the model's implicit layer with each solver; returns the ``{"cases": [...]}`` report.

    ``seconds`` is the median wall time of one batched solve over ``repeats`` runs (encoder
    and heads excluded: they are the same for every solver).
    """
    model.eval()
    with torch.no_grad():
        ctx, x = model.prepare(graph)
        shape, n = x.shape, x.shape[0]
        calls = {"n": 0}

        def f(z: torch.Tensor) -> torch.Tensor:  # the layer DEQuiformer.trunk solves
            calls["n"] += 1
            return model.implicit_layer(z.view(shape), x, ctx).reshape(n, -1)

        partial = model._partial_layer(x, ctx, shape)

        def evaluate_rows(z: torch.Tensor, active_rows: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1  # as the trunk does: converged graphs are not evaluated again
            return partial(z, active_rows)

        f.evaluate_rows = evaluate_rows  # type: ignore[attr-defined]

        anderson_kwargs = dict(model.deq_cfg["anderson"])
        cases = []
        for name in ("anderson", "forward", "torchdeq_anderson"):
            times, result = [], None
            for _ in range(repeats):
                calls["n"] = 0
                t0 = time.perf_counter()
                result = _solve(name, f, x, ctx, tol, max_iter, anderson_kwargs)
                synchronize(x.device)
                times.append(time.perf_counter() - t0)
            z, steps, residual = result
            cases.append({
                "solver": name,
                "f_evals_mean": float(steps.double().mean()),
                "batch_f_evals": calls["n"],
                "seconds": sorted(times)[len(times) // 2],
                "residual_max": float(residual.max()),
                "converged": int((residual < tol).sum()),
                "graphs": int(ctx.num_graphs),
            })
    return {"cases": cases, "tol": tol, "max_iter": max_iter, "num_graphs": int(ctx.num_graphs),
            "num_atoms": int(n), "repeats": repeats}


def _solve(name: str, f: Callable, x: torch.Tensor, ctx: Any, tol: float, max_iter: int, anderson_kwargs: dict):
    n = x.shape[0]
    z0 = x.new_zeros(n, x.shape[1] * x.shape[2])
    if name in ("anderson", "forward"):
        z, stats, _ = fixed_point_with_grad(f, z0, ctx.batch, ctx.num_graphs, solver=name,
                                            solver_kwargs=anderson_kwargs if name == "anderson" else {},
                                            tol=tol, max_iter=max_iter, grad="none")
        return z, stats.steps, stats.residual
    from torchdeq.solver import get_solver

    pad, unpad, f_padded = _padded_map(f, ctx.batch, ctx.num_graphs, z0.shape[1])
    zp, _, info = get_solver("anderson")(f_padded, pad(z0), max_iter=max_iter, tol=tol, stop_mode="rel",
                                         m=anderson_kwargs.get("m", 5), lam=anderson_kwargs.get("lam", 1e-4),
                                         tau=anderson_kwargs.get("beta", 1.0))
    z = unpad(zp)
    # torchdeq evaluates every graph until the worst has converged
    fz = f_padded(zp)
    diff = (fz - zp).norm(dim=1) / (fz.norm(dim=1) + 1e-9)
    nstep = info["nstep"].reshape(-1).long() if "nstep" in info else torch.full((ctx.num_graphs,), max_iter)
    steps = torch.full_like(nstep, int(nstep.max()))
    return z, steps, diff
