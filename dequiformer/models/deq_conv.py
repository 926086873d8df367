"""Implicit convolutional classifier for (graph) images: one residual conv layer solved to its fixed point.

The Deep AndersoNN / "implicit layers" CIFAR-10 model::

    x = BN(conv3x3(image))                                  stem, [B, C, H, W]
    z* = f(z*, x)                                           implicit layer, solved per image
    f(z, x) = GN3(ReLU(z + GN2(x + conv2(GN1(ReLU(conv1(z)))))))      layer="resnet"
    logits = Linear(flatten(AvgPool_p(BN(z*))))             head, [B, classes]

``conv1``: C -> K (``inner_channels``), ``conv2``: K -> C, both 3x3 without bias;
GN = GroupNorm(``num_groups``). With C = 48, K = 64, 8 groups, 32 x 32 RGB input,
pool 8 and 10 classes the model has exactly 64,842 parameters:
stem 1,344 + 96, layer 2 * 27,648 + 128 + 96 + 96, head 96 + 7,690.

``layer="post_injection"`` is the variant that injects ``x`` after the activation::

    f(z, x) = GN3(ReLU(z + GN2(conv2(ReLU(GN1(conv1(z)))))) + x)

(same parameters). Every image is its own fixed-point problem (``graph_index=None``
in :func:`dequiformer.deq.fixed_point_with_grad`); GroupNorm acts per image, so an
image's result does not depend on its batch mates. Gradients are implicit (IFT) by
default. The conv weights start as N(0, ``init_std``^2) (0.01 as in the tutorial), which
keeps ``f`` well inside its contractive regime at initialisation.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..deq import SolverStats, fixed_point_with_grad
from ..deq.diagnostics import spectral_radius_penalty
from ..deq.settings import solve_schema
from ..deq.solvers import SOLVER_OPTIONS
from ..schema import Option, defaults, resolve_section

__all__ = ["DEQConvClassifier", "ResidualConvLayer", "MODEL_DEFAULTS", "DEQ_DEFAULTS", "DEQ_SCHEMA", "LAYER_FORMS",
           "resolve_conv_deq"]

LAYER_FORMS = ("resnet", "post_injection")
IMAGE_SOLVERS = ("anderson", "forward")

def _image_size(value: Any) -> Any:
    try:
        _pair(value, "image_size")
    except ValueError:
        raise ValueError(f"must be an int or [H, W], got {value!r}") from None
    return value


_POSITIVE = {"low": 1}
MODEL_SCHEMA: dict[str, Option] = {
    "name": Option("deq_conv", str, choices=("deq_conv",)),
    # in_channels, num_classes and image_size may be null in a classify config: taken from the data
    "in_channels": Option(3, int, nullable=True, **_POSITIVE),
    "channels": Option(48, int, **_POSITIVE),           # C: stem output and fixed-point state channels
    "inner_channels": Option(64, int, **_POSITIVE),     # K: hidden channels of the residual layer
    "num_groups": Option(8, int, **_POSITIVE),          # GroupNorm groups (must divide C and K)
    "num_classes": Option(10, int, nullable=True, low=2),
    "image_size": Option(32, nullable=True, check=_image_size),  # int or [H, W]
    "kernel_size": Option(3, int, **_POSITIVE),
    "pool_size": Option(8, int, **_POSITIVE),           # average-pool window (and stride) of the head
    "layer": Option("resnet", str, choices=LAYER_FORMS),
    "init_std": Option(0.01, float, low=0, low_open=True),  # std of the implicit layer's conv weights
}
"""``model`` section (the 64,842-parameter CIFAR-10 model)."""
MODEL_DEFAULTS: dict[str, Any] = defaults(MODEL_SCHEMA)

DEQ_SCHEMA: dict[str, Option] = {
    **solve_schema(tol=1e-2, max_iter=25, b_tol=None, b_max_iter=None, solvers=IMAGE_SOLVERS),
    # in training, radius_reg * mean relu(rho - radius_target)^2 over the batch's images, rho a
    # power-iteration estimate of the layer's spectral radius at each image's fixed point (as the
    # force-field DEQ's deq.radius_reg): keeps the layer contractive, which Anderson's speed needs
    "radius_reg": Option(0.0, float, low=0.0),
    "radius_target": Option(0.5, float, low=0.0),
}
"""``deq`` section (the tutorial's solver settings: Anderson m=5, lam=1e-4, tol=1e-2 per image, 25
steps; ``b_tol`` / ``b_max_iter`` null: as the forward solve), the same solver settings as the
force-field DEQ's (:mod:`dequiformer.deq.settings`)."""
DEQ_DEFAULTS: dict[str, Any] = defaults(DEQ_SCHEMA)
# Anderson's / forward iteration's options, flat keys of this section in earlier configs
_PER_SOLVER_KEYS = {key: name for name, opts in SOLVER_OPTIONS.items() for key in opts}


def resolve_conv_deq(deq_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The conv classifier's ``deq`` section checked (:data:`DEQ_SCHEMA`); a per-solver option
    given as a flat key (``deq.m``, earlier configs) is an error naming where it goes now."""
    for key in deq_cfg or {}:
        if key in _PER_SOLVER_KEYS:
            raise ValueError(f"deq.{key} is a per-solver option now: set deq.{_PER_SOLVER_KEYS[key]}.{key}")
    return resolve_section("deq", deq_cfg, DEQ_SCHEMA)


def _pair(value: int | list[int] | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"model.{name} must be an int or [H, W], got {value!r}")


class ResidualConvLayer(nn.Module):
    """The implicit layer ``f(z, x)``: ``z, x`` ``[B, C, H, W]`` -> ``[B, C, H, W]``."""

    def __init__(self, channels: int, inner_channels: int, kernel_size: int = 3, num_groups: int = 8,
                 form: str = "resnet", init_std: float = 0.01) -> None:
        super().__init__()
        if form not in LAYER_FORMS:
            raise ValueError(f"model.layer must be one of {LAYER_FORMS}, got {form!r}")
        for name, c in (("channels", channels), ("inner_channels", inner_channels)):
            if c % num_groups:
                raise ValueError(f"model.num_groups={num_groups} must divide model.{name}={c}")
        if kernel_size % 2 != 1:
            raise ValueError(f"model.kernel_size must be odd (same-size convolution), got {kernel_size}")
        pad = kernel_size // 2
        self.form = form
        self.conv1 = nn.Conv2d(channels, inner_channels, kernel_size, padding=pad, bias=False)
        self.conv2 = nn.Conv2d(inner_channels, channels, kernel_size, padding=pad, bias=False)
        self.norm1 = nn.GroupNorm(num_groups, inner_channels)
        self.norm2 = nn.GroupNorm(num_groups, channels)
        self.norm3 = nn.GroupNorm(num_groups, channels)
        if init_std > 0:
            nn.init.normal_(self.conv1.weight, 0.0, init_std)
            nn.init.normal_(self.conv2.weight, 0.0, init_std)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.form == "resnet":
            y = self.norm1(torch.relu(self.conv1(z)))
            return self.norm3(torch.relu(z + self.norm2(x + self.conv2(y))))
        y = torch.relu(self.norm1(self.conv1(z)))
        return self.norm3(torch.relu(z + self.norm2(self.conv2(y))) + x)


class DEQConvClassifier(nn.Module):
    is_implicit = True  # the model contract of models.base.ForceFieldModel

    """Stem conv -> implicit residual conv layer (fixed point per image) -> norm, pool, linear.

    ``forward(images [B, in_channels, H, W]) -> logits [B, num_classes]``; the solve's
    :class:`~dequiformer.deq.SolverStats` (``steps`` [B], ``nfe``, after backward
    ``backward``) is kept on ``self.last_stats``. Hyperparameters: :data:`MODEL_DEFAULTS`
    (architecture) and :data:`DEQ_DEFAULTS` (solver), passed as keyword arguments.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 48,
        inner_channels: int = 64,
        num_groups: int = 8,
        num_classes: int = 10,
        image_size: int | tuple[int, int] | list[int] = 32,
        kernel_size: int = 3,
        pool_size: int = 8,
        layer: str = "resnet",
        init_std: float = 0.01,
        *,
        solver: str = "anderson",
        anderson: dict[str, Any] | None = None,
        forward: dict[str, Any] | None = None,
        tol: float = 1e-2,
        max_iter: int = 25,
        grad: str = "ift",
        b_tol: float | None = None,
        b_max_iter: int | None = None,
        radius_reg: float = 0.0,
        radius_target: float = 0.5,
    ) -> None:
        super().__init__()
        height, width = _pair(image_size, "image_size")
        if pool_size < 1 or height % pool_size or width % pool_size:
            raise ValueError(f"model.pool_size={pool_size} must divide the image size {height}x{width}")
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2, got {num_classes}")
        self.hparams = {
            "in_channels": in_channels, "channels": channels, "inner_channels": inner_channels,
            "num_groups": num_groups, "num_classes": num_classes, "image_size": [height, width],
            "kernel_size": kernel_size, "pool_size": pool_size, "layer": layer, "init_std": init_std,
        }
        self.image_size = (height, width)
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size, padding=kernel_size // 2, bias=True),
            nn.BatchNorm2d(channels),
        )
        self.layer = ResidualConvLayer(channels, inner_channels, kernel_size, num_groups, layer, init_std)
        features = channels * (height // pool_size) * (width // pool_size)
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.AvgPool2d(pool_size, pool_size),
            nn.Flatten(),
            nn.Linear(features, num_classes),
        )
        self.last_stats: SolverStats | None = None
        self.configure_solver(solver=solver, anderson=anderson or {}, forward=forward or {}, tol=tol,
                              max_iter=max_iter, grad=grad, b_tol=b_tol, b_max_iter=b_max_iter,
                              radius_reg=radius_reg, radius_target=radius_target)
        self.radius_loss: torch.Tensor | None = None  # the last training solve's weighted hinge

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, model_cfg: dict | None = None, deq_cfg: dict | None = None) -> "DEQConvClassifier":
        """Build from the ``model`` and ``deq`` config sections; unknown keys raise an error naming them."""
        model = resolve_section("model", model_cfg, MODEL_SCHEMA)
        model.pop("name")
        return cls(**model, **resolve_conv_deq(deq_cfg))

    def configure_solver(self, **settings: Any) -> None:
        """Set solver settings (keys of :data:`DEQ_SCHEMA`; per-solver options as mappings, merged
        into the current ones); used by ``bench`` to switch solvers. Checked by the schema."""
        current = getattr(self, "deq", DEQ_DEFAULTS)
        merged = {**current, **settings}
        for name in IMAGE_SOLVERS:
            merged[name] = {**current[name], **(settings.get(name) or {})}
        self.deq = resolve_conv_deq(merged)

    @staticmethod
    def _solver_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
        """The options of ``cfg["solver"]`` (``deq.anderson`` or ``deq.forward``)."""
        return dict(cfg[cfg["solver"]])

    # ------------------------------------------------------------------ forward
    def inject(self, images: torch.Tensor) -> torch.Tensor:
        """Input injection ``x = stem(images)``: ``[B, in, H, W] -> [B, C, H, W]``."""
        if images.ndim != 4 or tuple(images.shape[2:]) != self.image_size:
            raise ValueError(f"expected images [B, {self.hparams['in_channels']}, {self.image_size[0]}, "
                             f"{self.image_size[1]}], got {tuple(images.shape)}")
        return self.stem(images)

    def solve(self, x: torch.Tensor, z0: torch.Tensor | None = None, **overrides: Any) -> torch.Tensor:
        """Fixed point ``z* = f(z*, x)`` per image (``[B, C, H, W]``), with the configured gradient.

        ``overrides`` replace solver settings for this call only (e.g. ``tol``, ``max_iter``).
        """
        cfg = {**self.deq, **overrides}
        kwargs = self._solver_kwargs(cfg)
        z0 = torch.zeros_like(x) if z0 is None else z0
        b_tol = cfg["tol"] if cfg["b_tol"] is None else cfg["b_tol"]
        b_max = cfg["max_iter"] if cfg["b_max_iter"] is None else cfg["b_max_iter"]
        z, stats, _ = fixed_point_with_grad(
            lambda z_: self.layer(z_, x), z0, None, None, solver=cfg["solver"], solver_kwargs=kwargs,
            tol=float(cfg["tol"]), max_iter=int(cfg["max_iter"]), grad=cfg["grad"],
            b_tol=float(b_tol), b_max_iter=int(b_max),
        )
        self.last_stats = stats
        self.radius_loss = None
        if self.training and float(cfg["radius_reg"]) > 0 and torch.is_grad_enabled():
            hinge, _ = spectral_radius_penalty(lambda z_: self.layer(z_, x), z.detach(), None, None,
                                               float(cfg["radius_target"]))
            self.radius_loss = float(cfg["radius_reg"]) * hinge
        return z

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, in_channels, H, W] -> logits [B, num_classes]``."""
        return self.head(self.solve(self.inject(images)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
