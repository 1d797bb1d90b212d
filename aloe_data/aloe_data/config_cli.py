"""Config dataclasses <-> YAML and command lines: the one mechanism of aloe-train, aloe-loop and the benchmarks.

A config is a dataclass whose fields are plain values or *sections* (fields holding another config
dataclass, e.g. TrainConfig.critic). Every leaf field is known by its bare name (``beta``,
``critic_steps``), so a YAML file may be nested (``critic: {ensemble_size: 5}``) or flat
(``ensemble_size: 5``) and a command line has one flag per leaf (``--ensemble-size 5``). The help
text of a field is its trailing ``# comment`` in the class source (continuation comment lines
included): the class is the only place a knob is documented.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re


def _is_section(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def sections(config, exclude=()) -> list:
    """The config and every section in it (depth first; not those named in ``exclude``): the
    objects whose __post_init__ validates."""
    out = [config]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if _is_section(value) and f.name not in exclude:
            out += sections(value, exclude)
    return out


def leaf_fields(config, exclude=()) -> dict[str, tuple[object, dataclasses.Field]]:
    """Leaf field name -> (the config or section that owns it, the field); names in ``exclude``
    (leaves or whole sections) left out. A name may be a leaf of one section only."""
    out = {}
    for owner in sections(config, exclude):
        for f in dataclasses.fields(owner):
            if f.name in exclude or _is_section(getattr(owner, f.name)):
                continue
            if f.name in out:
                raise ValueError(f"config field {f.name!r} is in two sections: exclude one of them")
            out[f.name] = (owner, f)
    return out


def type_name(f: dataclasses.Field) -> str:
    """A field's annotation as text ('int', 'list[str]', 'str | None'), with or without
    ``from __future__ import annotations`` in the config's module."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", None) or str(f.type)


def convert(value, type_str: str, name: str):
    """A YAML / command-line value as the field's annotated type (annotations are strings here)."""
    optional = "None" in type_str
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if not optional:
            raise ValueError(f"{name} cannot be None")
        return None
    base = type_str.replace("| None", "").strip()
    if base.startswith("list"):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return [str(v) for v in value]
    if base.startswith("dict"):
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if base == "bool":
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"{name}: {value!r} is not a boolean")
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if base == "int":
        return int(value)
    if base == "float":
        return float(value)
    return str(value)


def apply_overrides(config, data: dict | None, exclude=()):
    """Set leaf fields from a nested or flat dict (in place), then validate every section again.
    Sections named in ``exclude`` are left alone (their keys are unknown here)."""
    leaves = leaf_fields(config, exclude)
    section_names = {f.name for owner in sections(config, exclude) for f in dataclasses.fields(owner)
                     if _is_section(getattr(owner, f.name)) and f.name not in exclude}
    flat: dict = {}

    def flatten(items: dict) -> None:
        for key, value in items.items():
            key = key.replace("-", "_")
            if key in section_names and isinstance(value, dict):
                flatten(value)
            else:
                flat[key] = value

    flatten(data or {})
    for key, value in flat.items():
        if key not in leaves:
            raise ValueError(f"unknown config key {key!r}; known: {sorted(leaves)}")
        owner, f = leaves[key]
        setattr(owner, key, convert(value, type_name(f), key))
    for obj in sections(config, exclude):
        if hasattr(obj, "__post_init__"):
            obj.__post_init__()
    return config


def field_docs(cls) -> dict[str, str]:
    """Field -> its trailing ``# comment`` in the dataclass source, continuation lines included."""
    docs, last = {}, None
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return docs
    for line in source.splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if m:
            last = m.group(1)
            docs[last] = m.group(2).strip()
            continue
        cont = re.match(r"\s+#\s*(.+)$", line)
        if cont and last is not None:
            docs[last] += " " + cont.group(1).strip()
        else:
            last = None
    return docs


def add_config_arguments(parser: argparse.ArgumentParser, config, choices: dict | None = None, exclude=(),
                         title: str = "{name} ({doc})") -> None:
    """One flag per leaf field of ``config`` (``--critic-steps``), in a group per section, with its
    comment as help and its current value as the shown default. Flags default to argparse.SUPPRESS:
    ``vars(args)`` holds only what was given (``overrides_from_args``)."""
    choices = choices or {}
    groups: dict = {}
    for name, (owner, f) in leaf_fields(config, exclude).items():
        cls = owner.__class__
        if cls not in groups:
            first_line = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            groups[cls] = parser.add_argument_group(title.format(name=cls.__name__, doc=first_line))
        doc = field_docs(cls).get(name, "")
        kind = type_name(f)
        default = getattr(owner, name)
        help_text = f"{doc} (default: {default!r})" if doc else f"(default: {default!r})"
        flag = f"--{name.replace('_', '-')}"
        if kind.startswith("dict"):
            continue  # mappings come from YAML only
        if kind == "bool":
            groups[cls].add_argument(flag, dest=name, default=argparse.SUPPRESS,
                                     action=argparse.BooleanOptionalAction, help=help_text)
        else:
            groups[cls].add_argument(flag, dest=name, default=argparse.SUPPRESS, choices=choices.get(name),
                                     metavar=None if name in choices else kind.replace(" ", "").upper(),
                                     help=help_text + ("; comma-separated" if "list" in kind else ""))


def overrides_from_args(args: argparse.Namespace, config, exclude=()) -> dict:
    """The leaf fields of ``config`` that were given on the command line."""
    leaves = leaf_fields(config, exclude)
    return {k: v for k, v in vars(args).items() if k in leaves}
