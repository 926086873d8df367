"""``dequiformer md``: NVE / Langevin / NPT molecular dynamics with fixed-point reuse statistics."""
from __future__ import annotations

import argparse

from ..simulate.options import add_solver_arguments, add_structure_arguments, print_summary, user_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="DEQuiformer or EquiformerV2 checkpoint (.pt)")
    add_structure_arguments(parser)
    parser.add_argument("--steps", type=int, default=100, help="MD steps")
    parser.add_argument("--dt", type=float, default=0.5, help="time step (fs)")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="initial Maxwell-Boltzmann temperature and Langevin target (K)")
    parser.add_argument("--ensemble", choices=["nve", "langevin", "npt"], default="nve",
                        help="nve: velocity Verlet; langevin: Langevin thermostat (NVT); npt: ASE's Berendsen "
                             "thermostat and isotropic barostat (conservative models, 3D-periodic structures)")
    parser.add_argument("--pressure", type=float, default=1.01325, help="NPT target pressure (bar)")
    parser.add_argument("--taut", type=float, default=100.0, help="NPT thermostat time constant (fs)")
    parser.add_argument("--taup", type=float, default=1000.0, help="NPT barostat time constant (fs)")
    parser.add_argument("--compressibility", type=float, default=4.57e-5, help="NPT compressibility (1/bar)")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction (1/fs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and Langevin noise")
    add_solver_arguments(parser)
    parser.add_argument("--traj", help="write the ASE trajectory here")
    parser.add_argument("--traj-interval", type=int, default=1, help="write every k-th step to --traj")
    parser.add_argument("--log", help="write the per-step CSV log here (step, time_fs, T_K, E_pot_eV, E_tot_eV, "
                                      "volume_A3, solver_steps, adjoint_steps, residual, reused, ms)")
    parser.add_argument("--json", help="write the summary JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@user_errors
def run(args: argparse.Namespace) -> int:
    import torch

    from ..simulate.md import run_md
    from ..simulate.options import calculator_from_args
    from ..simulate.structures import load_structure
    from ..rundir import write_json

    atoms = load_structure(args.structure, args.frame)
    calc = calculator_from_args(args)
    result = run_md(atoms, calc, steps=args.steps, dt_fs=args.dt, temperature_k=args.temperature,
                    ensemble=args.ensemble, friction_per_fs=args.friction, seed=args.seed, traj=args.traj,
                    traj_interval=args.traj_interval, log=args.log, progress=not args.quiet,
                    pressure_bar=args.pressure, taut_fs=args.taut, taup_fs=args.taup,
                    compressibility_per_bar=args.compressibility)
    summary = result.summary()
    summary.update({"checkpoint": str(args.checkpoint), "structure": str(args.structure), "frame": args.frame,
                    "temperature_k": args.temperature, "seed": args.seed, "tol": args.tol,
                    "reuse_tol": calc.reuse_tol, "pressure_bar": args.pressure if args.ensemble == "npt" else None,
                    "dtype": args.dtype, "device": args.device,
                    "threads": torch.get_num_threads()})
    print_summary(summary)
    write_json(args.json, summary)
    return 0
