"""YAML configuration: loading, ``--set section.key=value`` overrides, defaults."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

SECTIONS = ("model", "deq", "data", "train")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` (no decimal point) as a string; numbers users write in configs
    and ``--set`` overrides that way are read as floats here, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str, where: str = "YAML") -> Any:
    """YAML text -> Python values (safe loader; ``1e-4`` is a float). Malformed YAML is a
    ValueError naming ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}: malformed YAML{at}: {problem}") from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Read a YAML config and apply ``section.key=value`` overrides.

    The result always has the sections ``model``, ``deq``, ``data`` and ``train``
    (empty dicts where the file has none). A config may name a ``base`` file
    (relative to itself) whose values it extends.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as fh:
        cfg = parse_yaml(fh.read(), str(path)) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: top level of a config must be a mapping, got {type(cfg).__name__}")
    base = cfg.pop("base", None)
    if base is not None:
        cfg = merge(load_config(path.parent / base), cfg)
    unknown = sorted(set(cfg) - set(SECTIONS))
    if unknown:  # a misspelt section would otherwise be ignored and the defaults run
        raise ValueError(f"{path}: unknown config section(s) {unknown}; valid sections: {list(SECTIONS)} (and base)")
    for section in SECTIONS:
        cfg.setdefault(section, {})
        if cfg[section] is None:
            cfg[section] = {}
        if not isinstance(cfg[section], dict):
            raise ValueError(f"{path}: section {section!r} must be a mapping")
    for item in overrides:
        apply_override(cfg, item)
    return cfg


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; values in ``update`` win."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(cfg: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form section.key=value")
    dotted, raw = item.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if len(keys) < 2:
        raise ValueError(f"override {item!r} must name a section and a key, e.g. train.lr=1e-4")
    node = cfg
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"override {item!r}: {key!r} is not a mapping")
        node = child
    node[keys[-1]] = parse_yaml(raw, f"override {item!r}")


def save_config(cfg: dict, path: str | Path) -> None:
    """Write a config as YAML (atomically)."""
    from .rundir import write_text

    write_text(path, yaml.safe_dump(cfg, sort_keys=False))
