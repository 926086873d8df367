"""The one config schema: every section of every config is a mapping of named :class:`Option` s.

A command resolves each section with :func:`resolve_section`: defaults are filled, unknown keys
are refused by name (``unknown key(s) [...] in train; valid: [...]``), values are coerced to the
option's kind (YAML 1.1 reads ``1e-3`` without a decimal point as a string; here it is a float)
and checked against choices and ranges; every error names ``section.key`` and the value. A
nested mapping (``deq.anderson``, ``data.normalization``) is an option whose ``fields`` are
themselves options, resolved the same way.

The schemas live next to what they configure: ``train`` in :mod:`dequiformer.train.settings`,
``model`` in :mod:`dequiformer.models.hparams`, ``deq`` in :mod:`dequiformer.models.dequiformer`
(the per-solver options in :mod:`dequiformer.deq.solvers`), the classifier sections in
:mod:`dequiformer.classify.config` and :mod:`dequiformer.models.deq_conv`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["MISSING", "Option", "defaults", "resolve_section", "resolve_value"]

#: default of an option that is not filled in when absent (its reader has its own fallback)
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a mapping"}


@dataclass(frozen=True)
class Option:
    """One config key.

    ``kind``: ``int``, ``float``, ``str``, ``bool``, ``list``, ``dict`` or ``None`` (any value,
    checked by ``check`` alone). ``nullable``: ``null`` is allowed. ``choices``: the allowed
    values. ``low`` / ``high``: inclusive bounds, exclusive where ``low_open`` / ``high_open``.
    ``fields``: for a nested mapping, its own options (the defaults are theirs; ``default`` is
    not used). ``check``: a last test ``value -> value``
    that raises ``ValueError(reason)``; the reason is reported after the key's name.
    ``default`` is deep-copied into every resolved config.
    """

    default: Any
    kind: type | None = None
    nullable: bool = False
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    fields: Mapping[str, "Option"] | None = None
    check: Callable[[Any], Any] | None = None

    def describe(self) -> str:
        """What a valid value is, in words (for error messages)."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = _KIND_WORDS.get(self.kind, "a valid value")
            if self.low is not None and self.high is not None:
                text += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
            elif self.high is not None:
                text += f" {'<' if self.high_open else '<='} {self.high:g}"
        return text + (" or null" if self.nullable else "")


def defaults(schema: Mapping[str, Option]) -> dict[str, Any]:
    """The section's default values (nested mappings filled with theirs)."""
    return {k: (defaults(o.fields) if o.fields is not None else copy.deepcopy(o.default))
            for k, o in schema.items() if o.default is not MISSING}


def _coerce(value: Any, kind: type | None) -> Any:
    """``value`` as ``kind`` or raise TypeError. Integers are numbers; integral floats are not
    integers (an epoch count of 2.5 is a mistake, not 2); booleans are neither."""
    if kind is None:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if isinstance(value, bool):
        raise TypeError
    if kind is int:
        if isinstance(value, int):
            return value
        raise TypeError
    if kind is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1: 1e-3 is a string
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        raise TypeError
    if kind is list and isinstance(value, tuple):
        return list(value)
    if isinstance(value, kind):
        return value
    raise TypeError


def resolve_value(where: str, value: Any, option: Option) -> Any:
    """``value`` checked against ``option`` and coerced; errors name ``where``."""
    if value is None:
        if option.nullable:
            return None
        raise ValueError(f"{where} must be {option.describe()}, got None")
    if option.fields is not None:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return resolve_section(where, value, option.fields)
    try:
        out = _coerce(value, option.kind)
    except TypeError:
        raise ValueError(f"{where} must be {option.describe()}, got {value!r}") from None
    if option.choices is not None and out not in option.choices:
        raise ValueError(f"{where} must be {option.describe()}, got {value!r}")
    if option.low is not None and (out < option.low or (option.low_open and out == option.low)):
        raise ValueError(f"{where} must be {option.describe()}, got {value!r}")
    if option.high is not None and (out > option.high or (option.high_open and out == option.high)):
        raise ValueError(f"{where} must be {option.describe()}, got {value!r}")
    if option.check is not None:
        try:
            out = option.check(out)
        except ValueError as exc:
            raise ValueError(f"{where} {exc}") from None
    return out


def resolve_section(section: str, given: Mapping[str, Any] | None, schema: Mapping[str, Option]) -> dict[str, Any]:
    """``section``'s values: ``schema``'s defaults updated by ``given``, every value checked.

    Raises ValueError for an unknown key (naming it and listing the valid ones) or a bad value
    (naming ``section.key``).
    """
    given = {} if given is None else given
    if not isinstance(given, Mapping):
        raise ValueError(f"{section} must be a mapping, got {given!r}")
    unknown = sorted(set(given) - set(schema))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {section}; valid: {sorted(schema)}")
    out = defaults(schema)
    for key, value in given.items():
        out[key] = resolve_value(f"{section}.{key}", value, schema[key])
    return out
