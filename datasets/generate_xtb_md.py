#!/usr/bin/env python
"""GFN2-xTB Langevin molecular dynamics of one molecule, written as an MD17 (sGDML) npz.

The molecule is given by an ASE name (``ase.build.molecule``, e.g. ``H2O``, ``CH3CH2OH``)
or by SMILES (RDKit: hydrogens added, ETKDG embedding, MMFF optimisation). Energies and
forces come from tblite's GFN2-xTB (``tblite.ase.TBLite``). The output has the sGDML/MD17
layout read by ``dequiformer.data.readers.read_md17``:

    R [T, N, 3] Angstrom, z [N], E [T, 1] kcal/mol, F [T, N, 3] kcal/mol/A,
    name, theory, type ("d"), r_unit ("Ang"), e_unit ("kcal/mol"), md5, and the run
    settings (temperature_K, dt_fs, every, seed, equilibrate).

Frames are consecutive MD snapshots ``every`` steps apart (default 1 step of 0.5 fs),
taken after ``equilibrate`` unrecorded steps. The file is written to ``<out>.tmp`` and
renamed, so an interrupted run leaves no partial output.

Example:
    python datasets/generate_xtb_md.py --molecule CH3CH2OH --frames 5000 --out data/ethanol_xtb.npz
    python datasets/generate_xtb_md.py --smiles "CC(=O)Oc1ccccc1C(=O)O" --name aspirin --frames 2000
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

try:
    from dequiformer.data.units import KCAL_PER_MOL
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dequiformer.data.units import KCAL_PER_MOL
from dequiformer.rundir import atomic_output


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--molecule", help="ASE molecule name (ase.build.molecule), e.g. H2O, CH3CH2OH")
    src.add_argument("--smiles", help="SMILES string, embedded with RDKit (ETKDG + MMFF)")
    p.add_argument("--name", default=None, help="name stored in the file (default: molecule name or SMILES)")
    p.add_argument("--frames", type=int, default=1000, help="number of frames to record")
    p.add_argument("--temperature", type=float, default=500.0, help="Langevin thermostat temperature (K)")
    p.add_argument("--dt", type=float, default=0.5, help="MD timestep (fs)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction (1/fs)")
    p.add_argument("--every", type=int, default=1, help="record a frame every this many MD steps")
    p.add_argument("--equilibrate", type=int, default=200, help="unrecorded MD steps before the first frame")
    p.add_argument("--seed", type=int, default=0, help="seed for embedding, velocities and thermostat noise")
    p.add_argument("--method", default="GFN2-xTB", help="tblite method")
    p.add_argument("--accuracy", type=float, default=1.0, help="tblite numerical accuracy (smaller is tighter)")
    p.add_argument("--out", default=None, help="output .npz path (default: <name>_xtb_md.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def molecule_from_smiles(smiles: str, seed: int = 0):
    """``(ase.Atoms, formal charge)`` from SMILES: add H, ETKDG embedding, MMFF optimisation."""
    from ase import Atoms
    from rdkit import Chem

    from dequiformer.imaging.molecules import embed_rdkit

    mol = embed_rdkit(smiles, seed, max_iters=2000, uff_fallback=False)
    positions = mol.GetConformer().GetPositions()
    numbers = [atom.GetAtomicNum() for atom in mol.GetAtoms()]
    return Atoms(numbers=numbers, positions=positions), Chem.GetFormalCharge(mol)


def initial_structure(args: argparse.Namespace):
    """``(atoms, charge, name)`` for the requested molecule."""
    if args.molecule:
        from ase.build import molecule

        try:
            atoms = molecule(args.molecule)
        except KeyError:
            raise SystemExit(f"error: {args.molecule!r} is not an ase.build.molecule name; use --smiles") from None
        return atoms, 0, args.name or args.molecule
    atoms, charge = molecule_from_smiles(args.smiles, args.seed)
    return atoms, charge, args.name or args.smiles


def make_calculator(method: str = "GFN2-xTB", charge: int = 0, accuracy: float = 1.0):
    """tblite ASE calculator (eV, eV/A), silent."""
    from tblite.ase import TBLite

    return TBLite(method=method, charge=charge, accuracy=accuracy, verbosity=0)


def run_md(atoms, frames: int, temperature: float, dt: float, friction: float, every: int,
           equilibrate: int, seed: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Langevin MD with the attached calculator; returns R [T,N,3] (A), E [T] (eV), F [T,N,3] (eV/A)."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    thermalize = getattr(vd, "thermalize_momenta", None)  # ASE >= 3.28 name
    if thermalize is not None:
        thermalize(atoms, temperature_K=temperature, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    vd.Stationary(atoms)
    vd.ZeroRotation(atoms)
    # Hold the centre of mass with a constraint (not Langevin's fixcm); labels below are
    # the raw calculator forces, taken with apply_constraint=False.
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep=dt * units.fs, temperature_K=temperature, friction=friction / units.fs,
                   fixcm=False, rng=rng)
    R = np.empty((frames, len(atoms), 3))
    E = np.empty(frames)
    F = np.empty((frames, len(atoms), 3))
    total = equilibrate + (frames - 1) * every
    with tqdm(total=total, desc="xtb MD steps", unit="step", disable=not progress, file=sys.stderr) as bar:
        # observers also fire once before the first step; count only real steps
        dyn.attach(lambda: bar.update(1) if dyn.nsteps > 0 else None, interval=1)
        if equilibrate > 0:
            dyn.run(equilibrate)
        for t in range(frames):
            if t > 0:
                dyn.run(every)
            R[t] = atoms.positions
            E[t] = atoms.get_potential_energy()
            F[t] = atoms.get_forces(apply_constraint=False)
            if not (np.isfinite(E[t]) and np.all(np.isfinite(F[t]))):
                raise RuntimeError(f"xtb returned a non-finite energy or forces at frame {t}")
    return R, E, F


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to ``path`` atomically (:func:`dequiformer.rundir.atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def main(argv: list[str] | None = None) -> Path:
    """Command-line entry point; returns the path written."""
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.every < 1 or args.equilibrate < 0 or args.dt <= 0:
        raise SystemExit("error: need --frames >= 1, --every >= 1, --equilibrate >= 0 and --dt > 0")
    atoms, charge, name = initial_structure(args)
    atoms.calc = make_calculator(args.method, charge, args.accuracy)
    R, E_ev, F_ev = run_md(atoms, args.frames, args.temperature, args.dt, args.friction, args.every,
                           args.equilibrate, args.seed, progress=not args.quiet)
    z = np.asarray(atoms.numbers, dtype=np.uint8)
    E = (E_ev / KCAL_PER_MOL).reshape(-1, 1)
    F = F_ev / KCAL_PER_MOL
    digest = hashlib.md5()
    for arr in (R, z, E, F):
        digest.update(np.ascontiguousarray(arr).tobytes())
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    out = Path(args.out) if args.out else Path(f"{safe}_xtb_md.npz")
    try:
        from importlib.metadata import version

        tblite_version = version("tblite")
    except Exception:
        tblite_version = "?"
    write_npz_atomic(out, {
        "R": R, "z": z, "E": E, "F": F,
        "name": np.array(name), "theory": np.array(f"{args.method} (tblite {tblite_version})"),
        "type": np.array("d"), "r_unit": np.array("Ang"), "e_unit": np.array("kcal/mol"),
        "md5": np.array(digest.hexdigest()),
        "temperature_K": np.array(args.temperature), "dt_fs": np.array(args.dt),
        "every": np.array(args.every), "seed": np.array(args.seed), "equilibrate": np.array(args.equilibrate),
        "charge": np.array(charge),
    })
    if not args.quiet:
        print(f"wrote {out}: {args.frames} frames of {name} ({len(z)} atoms), "
              f"E in kcal/mol, F in kcal/mol/A", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
