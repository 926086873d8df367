"""Write frames of an MD17-layout npz (kcal/mol, Angstrom) as extxyz in eV, the layout peers read.

Splits follow the trainer's MD17 split (``random_split(n, n_train, n_val, seed)``), so a peer
such as MACE trains on exactly the frames a dequiformer run with the same ``data`` section used:

    python datasets/npz_to_extxyz.py data/demo/aspirin_train.npz --n-train 300 --n-val 50 --seed 1 \\
        --out data/demo/peer          # -> train.xyz, valid.xyz
    python datasets/npz_to_extxyz.py dequiformer/assets/demo/aspirin_heldout.npz --all --out data/demo/peer
                                      # -> all.xyz (the held-out frames)

Keys: ``REF_energy`` (info, eV) and ``REF_forces`` (arrays, eV/A).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from dequiformer.data.readers import read_dataset
from dequiformer.data.splits import random_split
from dequiformer.data.units import energy_factor


def frames_to_atoms(dataset, indices) -> list[Atoms]:
    factor = float(energy_factor(dataset.units["energy"], "eV"))
    out = []
    for i in indices:
        f = dataset[int(i)]
        atoms = Atoms(numbers=f.numbers, positions=f.positions)
        atoms.info["REF_energy"] = float(f.energy) * factor
        atoms.arrays["REF_forces"] = np.asarray(f.forces, dtype=np.float64) * factor
        out.append(atoms)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("npz")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--all", action="store_true", help="every frame to all.xyz (no split)")
    p.add_argument("--n-train", type=int, default=950)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    data = read_dataset(args.npz)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.all:
        write(out / "all.xyz", frames_to_atoms(data, range(len(data))), format="extxyz")
        return
    split = random_split(len(data), args.n_train, args.n_val, None, seed=args.seed)
    write(out / "train.xyz", frames_to_atoms(data, split.train), format="extxyz")
    write(out / "valid.xyz", frames_to_atoms(data, split.val), format="extxyz")


if __name__ == "__main__":
    main()
