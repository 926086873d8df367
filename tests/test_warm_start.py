"""WarmStartStore: keyed fixed points that refuse other atoms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dequiformer.deq import WarmStartMismatch, WarmStartStore


def test_round_trip_and_detached_copy():
    store = WarmStartStore()
    z = torch.randn(3, 4, 2, requires_grad=True) * 1.0
    store.put("calc", z, np.array([8, 1, 1]))
    assert "calc" in store and len(store) == 1
    got = store.get("calc", [8, 1, 1])
    assert not got.requires_grad
    torch.testing.assert_close(got, z.detach())
    with torch.no_grad():
        z.add_(1.0)  # later changes of the caller's tensor do not leak into the store
    assert not torch.equal(got, z.detach())
    assert store.get("other", [8, 1, 1]) is None


@pytest.mark.parametrize("species", [np.array([6, 1]), [6, 1], torch.tensor([6, 1])])
def test_accepts_numpy_list_and_tensor_species(species):
    store = WarmStartStore()
    store.put(("traj", 0), torch.ones(2, 5), torch.tensor([6, 1]))
    assert store.get(("traj", 0), species) is not None


def test_atom_count_mismatch_is_refused_with_message():
    store = WarmStartStore()
    store.put(0, torch.zeros(3, 2), [8, 1, 1])
    with pytest.raises(WarmStartMismatch, match="3 atoms.*4"):
        store.get(0, [8, 1, 1, 1])
    assert 0 in store  # a refused get leaves the entry alone


def test_species_mismatch_names_the_atoms():
    store = WarmStartStore()
    store.put("k", torch.zeros(3, 2), [8, 1, 1])
    with pytest.raises(WarmStartMismatch) as info:
        store.get("k", [8, 1, 6])
    message = str(info.value)
    assert "species" in message and "atom 2" in message and "Z=1" in message and "Z=6" in message
    assert isinstance(info.value, ValueError)


def test_on_mismatch_reset_drops_the_entry():
    store = WarmStartStore()
    store.put("k", torch.zeros(3, 2), [8, 1, 1])
    assert store.get("k", [1, 8, 1], on_mismatch="reset") is None
    assert "k" not in store and len(store) == 0
    with pytest.raises(ValueError, match="on_mismatch"):
        store.get("k", [8, 1, 1], on_mismatch="ignore")


def test_reset_one_or_all_and_put_checks_rows():
    store = WarmStartStore()
    for key in ("a", "b", "c"):
        store.put(key, torch.zeros(2, 1), [1, 1])
    store.reset("a")
    store.reset("missing")
    assert "a" not in store and len(store) == 2
    store.reset()
    assert len(store) == 0
    with pytest.raises(ValueError, match="rows"):
        store.put("a", torch.zeros(3, 1), [1, 1])
