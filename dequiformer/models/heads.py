"""Output heads: energy, direct forces, graph class logits; and output scaling."""
from __future__ import annotations

import torch

from ..nn.attention import SO2EquivariantGraphAttention
from ..nn.context import EdgeContext
from ..nn.feed_forward import FeedForwardNetwork
from ..nn.scatter import scatter_sum
from ..so3.wigner import cartesian_l1_index
from .encoder import edge_channels_list


class EnergyHead(torch.nn.Module):
    """FFN to one channel; per-atom l = 0 outputs summed per graph and divided by avg_num_nodes
    (``energy_pooling: avg_num_nodes``, EquiformerV2) or summed (``sum``).

    With ``energy_head_init: zero`` the FFN's last layer starts at zero, so the energy starts
    at the per-element references exactly: summed per-atom outputs at torch's initialisation
    add a large, structure-size dependent offset that training first has to remove.

    Shapes: x [N, K, C] -> energy [B] (normalised units; see OutputScaling).
    """

    def __init__(self, hp: dict) -> None:
        super().__init__()
        self.ffn = FeedForwardNetwork(
            in_channels=hp["sphere_channels"], hidden_channels=hp["ffn_hidden_channels"], out_channels=1,
            lmax=hp["lmax"], grid_resolution=hp["grid_resolution"], use_gate_act=hp["use_gate_act"],
            use_grid_mlp=hp["use_grid_mlp"], use_sep_s2_act=hp["use_sep_s2_act"],
        )
        self.divisor = float(hp["avg_num_nodes"]) if hp["energy_pooling"] == "avg_num_nodes" else 1.0
        if hp["energy_head_init"] == "zero":
            with torch.no_grad():
                for p in self.ffn.linear_2.parameters():
                    p.zero_()

    def forward(self, x: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        node_energy = self.ffn(x)[:, 0, 0]
        return scatter_sum(node_energy, ctx.batch, ctx.num_graphs) / self.divisor


class ForceHead(torch.nn.Module):
    """Attention block with one output channel; its l = 1 coefficients are the force vector.

    Shapes: x [N, K, C] -> forces [N, 3] (Cartesian x, y, z; normalised units).
    """

    def __init__(self, hp: dict) -> None:
        super().__init__()
        self.attention = SO2EquivariantGraphAttention(
            sphere_channels=hp["sphere_channels"], hidden_channels=hp["attn_hidden_channels"],
            num_heads=hp["num_heads"], alpha_channels=hp["attn_alpha_channels"],
            value_channels=hp["attn_value_channels"], output_channels=1, lmax=hp["lmax"], mmax=hp["mmax"],
            max_num_elements=hp["max_num_elements"], edge_channels=edge_channels_list(hp),
            grid_resolution=hp["grid_resolution"], use_atom_edge_embedding=hp["use_atom_edge_embedding"],
            use_gate_act=hp["use_gate_act"], use_sep_s2_act=hp["use_sep_s2_act"], alpha_drop=0.0,
        )
        self.register_buffer("cartesian", torch.tensor(cartesian_l1_index()) + 1, persistent=False)

    def forward(self, x: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        return self.attention(x, ctx)[:, :, 0].index_select(1, self.cartesian)


class ClassificationHead(torch.nn.Module):
    """Graph invariants -> MLP -> class logits [B, num_classes].

    The invariants are, per channel, the mean of the atoms' l = 0 features and the length of the
    sum of their l = 1 features (``C`` each, concatenated). The second kind is what a vector
    property of the whole structure needs: a dipole is close to a sum of local (bond) dipoles, so
    its magnitude is the length of a summed vector, which no mean of scalars can express (with
    the mean of l = 0 features alone the dipole classifier stayed at chance). The l = 1 block is
    rotated by an orthogonal Wigner matrix, so its length is rotation invariant.

    Shapes: x [N, K, C] -> logits [B, num_classes].
    """

    def __init__(self, hp: dict) -> None:
        super().__init__()
        c = hp["sphere_channels"]
        self.mlp = torch.nn.Sequential(torch.nn.Linear(2 * c, c), torch.nn.SiLU(),
                                       torch.nn.Linear(c, int(hp["num_classes"])))

    def forward(self, x: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        counts = torch.bincount(ctx.batch, minlength=ctx.num_graphs).clamp(min=1).to(x.dtype)
        scalars = scatter_sum(x[:, 0], ctx.batch, ctx.num_graphs) / counts[:, None]
        vectors = scatter_sum(x[:, 1:4].reshape(x.shape[0], -1), ctx.batch, ctx.num_graphs)
        # eps inside the root: the length's gradient is finite where the summed vector vanishes
        lengths = (vectors.view(ctx.num_graphs, 3, -1).pow(2).sum(1) + 1e-8).sqrt()
        return self.mlp(torch.cat([scalars, lengths], dim=1))


class OutputScaling(torch.nn.Module):
    """Maps normalised head outputs to the training units.

    ``energy = energy_scale * e + sum_atoms energy_reference[Z]``; ``forces = force_scale * f``.
    Buffers are saved in checkpoints; the trainer sets them from the training-set statistics.
    The energy is returned in float64 whatever the model's dtype: total energies (e.g. -4e5
    kcal/mol for MD17 aspirin) would otherwise be rounded to ~0.03 kcal/mol in float32.
    """

    def __init__(self, max_num_elements: int) -> None:
        super().__init__()
        self.register_buffer("energy_scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("force_scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("energy_reference", torch.zeros(max_num_elements, dtype=torch.float64))

    def energy(self, energy: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        """Normalised head energy [B] -> training units (float64)."""
        ref = scatter_sum(self.energy_reference.double()[ctx.atomic_numbers], ctx.batch, ctx.num_graphs)
        return energy.double() * self.energy_scale.double() + ref

    def forward(self, energy: torch.Tensor, forces: torch.Tensor, ctx: EdgeContext) -> tuple[torch.Tensor, torch.Tensor]:
        return self.energy(energy, ctx), forces * self.force_scale.to(forces.dtype)
