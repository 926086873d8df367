"""DEQuiformer: EquiformerV2 whose block stack is one implicit layer solved to its fixed point."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..data.graph import AtomicGraph
from ..deq import fixed_point_with_grad
from ..deq.corrector import corrector_steps
from ..deq.implicit import adjoint_solve, attach_tangent_solve
from ..deq.secant_memory import SecantMemory
from ..deq.settings import solve_schema
from ..schema import Option, defaults, resolve_section
from ..deq.diagnostics import jacobian_frobenius, jacobian_spectral_radius, spectral_radius_penalty
from ..nn.context import EdgeContext
from ..nn.scatter import scatter_sum
from .base import ForceFieldModel
from .blocks import TransformerBlock
from .derivatives import Displacement, displace

DEQ_SCHEMA: dict[str, Option] = {
    **solve_schema(tol=1e-4, max_iter=40, b_tol=1e-4, b_max_iter=40),
    # warm starts at inference (calculator, TorchSim): relative residual of a warm-started solve,
    # and past fixed points extrapolated from, 1-3; null = 3 when reuse_tol <= 1e-3, else 1
    # (see deq.predictor.FixedPointPredictor)
    "reuse_tol": Option(1e-1, float, low=0, low_open=True),
    # caps of the forward and adjoint (IFT backward) solves in training only, where each frame's
    # solve starts from its fixed point of the last epoch (train.fixed_point_store_mb), so fewer
    # iterations reach what a cold solve needs max_iter for; null: max_iter / b_max_iter. Cheaper
    # steps, more of them per minute (configs/demo/README.md, session 8)
    "train_max_iter": Option(None, int, nullable=True, low=1),
    "train_b_max_iter": Option(None, int, nullable=True, low=1),
    "predictor": Option(None, int, nullable=True, choices=(1, 2, 3)),
    # warm starts along a trajectory without a tolerance (ASPC, deq/corrector.py): where the last
    # two fixed points give a linear extrapolation, take exactly this many damped steps
    # z <- (2/3) f(z) + (1/3) z from it instead of solving to reuse_tol; null = off. Needs a
    # contractive layer (Jacobian radius well below 1, e.g. trained with radius_reg)
    "correctors": Option(None, int, nullable=True, low=1),
    # warm starts along a trajectory: Anderson keeps this many secant pairs from one solve to the
    # next (deq/secant_memory.py) and may accept a step on the predicted residual of its next
    # iterate, so many warm starts need one layer evaluation; null = off. Anderson only
    "secant_memory": Option(None, int, nullable=True, low=1),
    "phantom_steps": Option(1, int, low=1),
    "phantom_tau": Option(1.0, float, low=0, low_open=True),
    # loss on intermediate solver states, weight ** (K - k) for the k-th of K
    "fp_correction": Option(None, dict, fields={"states": Option(3, int, low=0), "weight": Option(0.8, float, low=0)}),
    # training memory: the tracked layer evaluations (f(z*) and the correction states) and the
    # heads on each correction state are recomputed in backward instead of being stored, so
    # one of them is alive at a time (activation checkpointing; costs 1 + states extra f calls)
    "recompute": Option(True, bool),
    # Jacobian regularisation (Bai, Koltun, Kolter 2021): in training, add
    # jacobian_reg * ||J||_F^2 / dim at the fixed point (one Hutchinson sample per step) to the
    # loss, which keeps the layer contractive; 0 turns it off
    "jacobian_reg": Option(0.0, float, low=0),
    # spectral-radius penalty: in training, add radius_reg * mean_g relu(rho_g - radius_target)^2
    # with rho_g a 3-step power-iteration estimate of the layer's spectral radius at each graph's
    # fixed point. The Frobenius penalty above bounds the mean singular value and let the dominant
    # mode pass 1 late in training (configs/demo/README.md); this one holds that mode below the
    # target, where warm starts converge in a step or two. 0 turns it off.
    "radius_reg": Option(0.0, float, low=0),
    "radius_target": Option(0.5, float, low=0),
    # both penalties on every K-th training step only, with K times their weights (the same
    # average pull): they cost about a seventh of a demo training step and the radius moves
    # slowly from one step to the next (configs/demo/README.md, session 12)
    "penalty_every": Option(1, int, low=1),
    # training with a loss on -dE/dpos (conservative forces, train.grad_force_weight): how the
    # loss's gradient passes back through the adjoint g = (I - J^T)^{-1} dE/dz*. "exact" solves the
    # tangent equation u = J u + u0 (one more solve, each step a double backward through the
    # layer); "one_step" keeps only its first Neumann term u0 (Jacobian-free, like the phantom
    # gradient of the fixed point itself): the forces' values stay exact, their parameter gradient
    # is approximate, and a training step is about a quarter cheaper (configs/demo/README.md);
    # "none" keeps no term through the layer's Jacobian: the gradient reaches the adjoint through
    # dE/dz* (the energy head) only, so no double-backward graph of J^T g is built or stored
    # (session 13: a demo -dE/dpos step's live peak 105 -> 77 MB, but the 45-minute run's held-out
    # accuracy fell from 0.430 / 0.866 to 0.733 / 1.064, so the demo recipe keeps one_step;
    # configs/demo/README.md)
    "force_tangent": Option("exact", str, choices=("exact", "one_step", "none")),
}
DEQ_DEFAULTS: dict[str, Any] = defaults(DEQ_SCHEMA)


def resolve_deq(deq_cfg: dict | None) -> dict:
    """The ``deq`` section with defaults filled and every value checked (:data:`DEQ_SCHEMA`);
    errors name ``deq.<key>``."""
    return resolve_section("deq", deq_cfg, DEQ_SCHEMA)


def rescale_per_graph(v: torch.Tensor, ref: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Scale each graph's rows of ``v`` [N, K, C] to the Frobenius norm of its rows of ``ref``."""
    nv = scatter_sum(v.pow(2).sum(dim=(1, 2)), batch, num_graphs).sqrt()
    nr = scatter_sum(ref.pow(2).sum(dim=(1, 2)), batch, num_graphs).sqrt()
    return v * (nr / (nv + torch.finfo(v.dtype).eps))[batch].view(-1, 1, 1)


class DEQuiformer(ForceFieldModel):
    """Implicit layer ``f(z, x) = blocks(rescale(z + x))`` with 1-2 transformer blocks (norms
    before and after each sublayer), solved from ``z0 = 0`` or a warm start.

    ``model(graph, z0=None, tol=None, max_iter=None)`` returns energy and forces plus
    ``fixed_point`` (detached [N, K, C]) and ``solver`` (SolverStats, per graph). Without an
    explicit ``tol`` a cold solve uses ``deq.tol`` and a warm-started one ``deq.reuse_tol``.
    Dropout masks are drawn once per forward and shared by every solver iteration.
    """

    is_implicit = True

    def __init__(self, model_cfg: dict, deq_cfg: dict | None = None) -> None:
        super().__init__({**model_cfg, "name": "dequiformer"})
        self.deq_cfg = resolve_deq(deq_cfg)
        self.blocks = torch.nn.ModuleList(TransformerBlock(self.hparams) for _ in range(self.hparams["num_layers"]))
        for module in self.dropout_modules():
            module.recurrent = True

    def implicit_layer(self, z: torch.Tensor, x: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        h = rescale_per_graph(z + x, x, ctx.batch, ctx.num_graphs)
        for block in self.blocks:
            h = block(h, ctx)
        return h

    def _solver_kwargs(self, solver: str) -> dict[str, Any]:
        """The options of ``solver`` from the deq config (``deq.anderson``, ``deq.broyden``, ``deq.forward``)."""
        return dict(self.deq_cfg[solver])

    def jacobian_radius(self, graph: AtomicGraph, iters: int = 10) -> torch.Tensor:
        """Spectral radius estimate ``[B]`` of the implicit layer's Jacobian at each graph's fixed
        point (eval mode, no dropout); above ~1 the layer is no longer contractive."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                ctx, x = self.prepare(graph)
                z, _ = self.trunk(x, ctx)
            shape, n = x.shape, x.shape[0]

            def f(v: torch.Tensor) -> torch.Tensor:
                return self.implicit_layer(v.view(shape), x, ctx).reshape(n, -1)

            return jacobian_spectral_radius(f, z.reshape(n, -1), ctx.batch, ctx.num_graphs, iters=iters)
        finally:
            self.train(was_training)

    def trunk_needs_graph(self) -> bool:
        return self.training

    def energy_gradient(self, energy: torch.Tensor, h: torch.Tensor, x: torch.Tensor, ctx: EdgeContext,
                        disp: Displacement, extras: dict[str, Any], create: bool) -> list[torch.Tensor]:
        """``dE/dpos`` (and ``dE/d(strain)``) through the fixed point by the implicit function theorem.

        ``dE/dpos = g^T df/dpos`` at ``z*`` with the adjoint ``g = J^T g + dE/dz*`` solved by the
        deq solver (``b_tol`` or the caller's ``adjoint_tol``, ``b_max_iter``), started from ``extras["adjoint0"]`` when the caller
        passed one (the previous MD step's adjoint, like the fixed point's warm start), else from
        ``dE/dz*``; its statistics go to ``extras["adjoint"]`` and the solution to
        ``extras["adjoint_vector"]``. One vector-Jacobian product of the layer then gives the
        position and strain derivatives; the solver is never unrolled. The value is exact up to
        the solver tolerances. With ``create`` (training) the result stays differentiable in the
        parameters, exactly: the linearisation point is the trunk output itself (value ``z*``,
        IFT hook attached, so gradients reaching it follow ``dz*/dtheta``), the layer is
        re-evaluated on fresh position/strain leaves (so ``df/dpos`` is the partial derivative
        at fixed ``z``), and ``g_theta = dE/dz* + J^T g`` (value ``g``) carries a tangent solve
        ``u = J u + u0`` on its incoming gradient (:func:`attach_tangent_solve`; with
        ``deq.force_tangent: one_step`` only ``u0``, the first term of its Neumann series; with
        ``none`` ``g_theta`` has value ``g`` and a gradient through ``dE/dz*`` only). Checked
        against finite differences in the tests.
        """
        cfg = self.deq_cfg
        shape, n = x.shape, x.shape[0]
        g0 = extras.pop("adjoint0", None)
        b_tol = float(extras.pop("adjoint_tol", cfg["b_tol"]))
        if create:
            # the copy of h keeps h's IFT hook from firing when v is taken below
            z = h.reshape(n, -1) * 1.0
            disp = displace(disp.graph, stress=disp.strain is not None)
            ctx, x = self.prepare(disp.graph)
        else:
            z = h.detach().reshape(n, -1).requires_grad_(True)
        (v,) = torch.autograd.grad(self.decode_energy(z.view(shape), ctx).sum(), z, create_graph=create)
        fz = self.implicit_layer(z.view(shape), x, ctx).reshape(n, -1)
        if g0 is not None and tuple(g0.shape) != tuple(shape):
            raise ValueError(f"adjoint warm start has shape {tuple(g0.shape)}, expected {tuple(shape)}")
        solver = cfg["solver"]
        g, stats = adjoint_solve(
            fz, z, v, ctx.batch, ctx.num_graphs, solver=solver,
            solver_kwargs=self._solver_kwargs(solver), tol=b_tol,
            max_iter=self._cap("b_max_iter"), g0=None if g0 is None else g0.reshape(n, -1),
        )
        extras["adjoint"] = stats
        extras["adjoint_vector"] = g.detach().view(shape)
        if extras.get("solver") is not None:  # the forward solve's report carries its adjoint
            extras["solver"].adjoint = stats
        g_theta = g
        if create and cfg["force_tangent"] == "none":
            g_theta = g + (v - v.detach())  # value g, gradient through dE/dz* only
        elif create:
            (jtg,) = torch.autograd.grad(fz, z, g, create_graph=True)
            g_theta = v + jtg
            if cfg["force_tangent"] == "exact":
                g_theta = attach_tangent_solve(
                    g_theta, fz, z, ctx.batch, ctx.num_graphs, solver=solver,
                    solver_kwargs=self._solver_kwargs(solver), tol=float(cfg["b_tol"]),
                    max_iter=self._cap("b_max_iter"), stats_out=stats.backward,
                )
        grads = torch.autograd.grad(fz, disp.leaves(), g_theta.to(fz.dtype), create_graph=create, allow_unused=True)
        return [torch.zeros_like(leaf) if gr is None else gr for gr, leaf in zip(grads, disp.leaves())]

    def decode_correction(self, h: torch.Tensor, ctx: EdgeContext) -> dict[str, torch.Tensor]:
        if not self.deq_cfg["recompute"]:
            return self.decode(h, ctx)
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.decode, h, ctx, use_reentrant=False)

    def _partial_layer(self, x: torch.Tensor, ctx: EdgeContext, shape: torch.Size):
        """``evaluate_rows(z, active_rows)`` for the solvers: the layer on the still-unconverged
        graphs only (graphs do not interact, so this is exact). Sub-contexts are cached per mask."""
        cache: dict[bytes, tuple[EdgeContext, torch.Tensor]] = {}
        n = shape[0]

        def evaluate_rows(z: torch.Tensor, active_rows: torch.Tensor) -> torch.Tensor:
            key = active_rows.cpu().numpy().tobytes()
            if key not in cache:
                cache.clear()
                cache[key] = (ctx.subset(active_rows), x[active_rows])
            sub_ctx, sub_x = cache[key]
            z_flat = z.reshape(n, -1)
            out = z_flat.clone()
            out[active_rows] = self.implicit_layer(z_flat[active_rows].view(-1, *shape[1:]), sub_x, sub_ctx).reshape(-1, z_flat.shape[1])
            return out

        return evaluate_rows

    def _cap(self, name: str) -> int:
        """``deq.max_iter`` or ``deq.b_max_iter``; in training ``deq.train_<name>`` when it is set."""
        cap = self.deq_cfg.get(f"train_{name}") if self.training else None
        return int(cap if cap is not None else self.deq_cfg[name])

    def trunk(
        self,
        x: torch.Tensor,
        ctx: EdgeContext,
        z0: torch.Tensor | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        solver: str | None = None,
        trace: bool = False,
        adjoint0: torch.Tensor | None = None,
        adjoint_tol: float | None = None,
        correctors: int | None = None,
        secant_memory: SecantMemory | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg = self.deq_cfg
        for module in self.dropout_modules():
            module.reset()
        shape, n = x.shape, x.shape[0]
        warm = z0 is not None
        if warm:
            if tuple(z0.shape) != tuple(shape):
                raise ValueError(f"warm start z0 has shape {tuple(z0.shape)}, expected {tuple(shape)}")
            z0 = z0.to(dtype=x.dtype, device=x.device).reshape(n, -1)
        else:
            z0 = x.new_zeros(n, shape[1] * shape[2])
        if tol is None:
            tol = cfg["reuse_tol"] if warm else cfg["tol"]
        solver = solver or cfg["solver"]
        solver_kwargs = self._solver_kwargs(solver)
        if secant_memory is not None:
            if solver != "anderson" or not warm or (self.training and torch.is_grad_enabled()):
                raise ValueError(f"a secant memory carries Anderson's history between warm-started inference solves; "
                                 f"got solver {solver!r}, warm start {warm}, training {self.training}")
            solver_kwargs["memory"] = secant_memory
        fpc = cfg["fp_correction"]
        n_states = int(fpc["states"]) if (self.training and float(fpc["weight"]) > 0) else 0

        def f(z: torch.Tensor) -> torch.Tensor:
            return self.implicit_layer(z.view(shape), x, ctx).reshape(n, -1)

        if not self.training:  # (training masks are shaped for the whole batch)
            f.evaluate_rows = self._partial_layer(x, ctx, shape)  # type: ignore[attr-defined]

        if correctors is not None:
            if not warm or (self.training and torch.is_grad_enabled()):
                raise ValueError("correctors are an inference warm start: they need z0 and no training")
            z, stats = corrector_steps(f, z0, ctx.batch, ctx.num_graphs, steps=int(correctors))
            states = []
        else:
            z, stats, states = fixed_point_with_grad(
                f, z0, ctx.batch, ctx.num_graphs, solver=solver, solver_kwargs=solver_kwargs, tol=float(tol),
                max_iter=int(max_iter or self._cap("max_iter")), grad=cfg["grad"], b_tol=float(cfg["b_tol"]),
                b_max_iter=self._cap("b_max_iter"), phantom_steps=int(cfg["phantom_steps"]),
                phantom_tau=float(cfg["phantom_tau"]), n_states=n_states, trace=trace, recompute=bool(cfg["recompute"]),
            )
        z = z.view(shape)
        extras = {
            "fixed_point": z.detach(),
            "solver": stats,
            "correction_states": [s.view(shape) for s in states],
        }
        if adjoint0 is not None:  # consumed by energy_gradient (warm start of the adjoint solve)
            extras["adjoint0"] = adjoint0
        if adjoint_tol is not None:  # consumed by energy_gradient (instead of deq.b_tol)
            extras["adjoint_tol"] = float(adjoint_tol)
        if (self.training and torch.is_grad_enabled() and self.penalty_scale > 0
                and (cfg["jacobian_reg"] > 0 or cfg["radius_reg"] > 0)):
            if self.defer_penalties:
                extras["deferred_penalties"] = self._penalties(x.detach(), ctx.detached(), z.detach())
            else:
                for term in self._penalties(x, ctx, z.detach()):
                    extras.update(term())
        return z, extras

    #: set by the trainer (single process): compute the contractivity penalties after the main
    #: backward, each as a backward of its own, instead of adding them to the loss. Their graphs
    #: (a tracked layer evaluation and its vector-Jacobian products) then never coexist with the
    #: training step's or with each other's, which lowers the step's peak memory; their gradient
    #: reaches the implicit layer's parameters only (the layer is evaluated on a detached input
    #: injection)
    defer_penalties: bool = False

    #: set by the trainer before each step: the factor on the contractivity penalties' weights,
    #: 0 on the steps ``deq.penalty_every`` skips and ``penalty_every`` on the others
    penalty_scale: float = 1.0

    def _penalties(self, x: torch.Tensor, ctx: EdgeContext, z: torch.Tensor) -> list[Callable[[], dict[str, torch.Tensor]]]:
        """One closure per active contractivity penalty at the fixed point ``z``, each returning
        its weighted term: ``jacobian_loss`` (``deq.jacobian_reg``), then ``radius_loss`` and
        ``train_radius`` (``deq.radius_reg``). Separate closures let a caller backward one
        before building the next (session 13: the demo step's penalty peak 83 -> 48 MB)."""
        cfg = self.deq_cfg
        shape, n = x.shape, x.shape[0]
        scale = float(self.penalty_scale)
        zf = z.reshape(n, -1)

        def f(v: torch.Tensor) -> torch.Tensor:
            return self.implicit_layer(v.view(shape), x, ctx).reshape(n, -1)

        def jacobian() -> dict[str, torch.Tensor]:
            return {"jacobian_loss": scale * float(cfg["jacobian_reg"]) * jacobian_frobenius(f, zf)}

        def radius() -> dict[str, torch.Tensor]:
            hinge, rho = spectral_radius_penalty(f, zf, ctx.batch, ctx.num_graphs, float(cfg["radius_target"]))
            return {"radius_loss": scale * float(cfg["radius_reg"]) * hinge, "train_radius": rho}

        return [term for weight, term in ((cfg["jacobian_reg"], jacobian), (cfg["radius_reg"], radius)) if weight > 0]
