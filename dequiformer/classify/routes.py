"""Which route a config or a checkpoint takes: images (``deq_conv``) or 3D structures."""
from __future__ import annotations

from typing import Any, Mapping, Union

from .config import uses_structure_route
from .images import ImageRoute
from .structures import StructureRoute

__all__ = ["ROUTES", "RouteClass", "route_for_config"]

RouteClass = Union[type[ImageRoute], type[StructureRoute]]
# the checkpoint's ``route`` field -> the route class that reads it
ROUTES: dict[str, RouteClass] = {ImageRoute.kind: ImageRoute, StructureRoute.kind: StructureRoute}


def route_for_config(cfg: Mapping[str, Any]) -> RouteClass:
    """:class:`StructureRoute` when ``model.name`` is a 3D-structure model, else :class:`ImageRoute`."""
    return StructureRoute if uses_structure_route(cfg) else ImageRoute
