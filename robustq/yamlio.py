"""Reading YAML configs defensively: UTF-8 only, bounded in size, no duplicate keys, and no
alias expansion beyond what a config can need.

PyYAML's safe loader never runs code, but it silently keeps the last of two equal keys and
expands anchors and aliases without limit: a few hundred bytes ("billion laughs") can stand
for millions of nodes, and an alias can refer to itself. ``read_yaml`` and ``parse_value``
refuse all of that with one ``ConfigError`` sentence.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .integrity import short

MAX_CONFIG_BYTES = 1_000_000   # a config is a few hundred bytes; anything this big is not one
MAX_NODES, MAX_DEPTH = 10_000, 32


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (YAML
    says keys are unique; PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a non-scalar key is refused later as an unknown config key
            key = self.construct_object(key_node)
            if key in seen:
                raise ConfigError(f"the key {short(key, 40)} appears twice in one section (line "
                                  f"{key_node.start_mark.line + 1}); keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _bounded(value: Any, where: str) -> Any:
    """``value`` unless, with YAML aliases expanded, it is huge, deeply nested or cyclic (a
    "billion laughs" bomb is a few hundred bytes that expand to millions of nodes)."""
    count, stack = 0, [(value, 0, ())]
    while stack:
        v, depth, parents = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH or id(v) in parents:
            raise ConfigError(f"{where} expands to a structure too large, too deep or cyclic "
                              f"for a config (YAML anchors and aliases nested too far); write "
                              f"the values out")
        if isinstance(v, (dict, list)):
            items = list(v.keys()) + list(v.values()) if isinstance(v, dict) else v
            stack.extend((c, depth + 1, parents + (id(v),)) for c in items)
    return value


def read_yaml(p: Path) -> dict:
    """A config file's mapping: UTF-8 YAML, no duplicate keys, bounded, not empty."""
    if p.exists() and not p.is_dir() and not p.is_file():
        raise ConfigError(f"config file {p} is not a regular file (a device or FIFO); pass the "
                          f"path of a YAML file")
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist; pass the path of a YAML file "
                          f"such as configs/quickstart.yaml") from None
    except OSError as e:  # a folder, a loop of links, no permission, ...
        raise ConfigError(f"config file {p} cannot be read ({e.strerror or type(e).__name__}); "
                          f"pass the path of a readable YAML file") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is larger than {MAX_CONFIG_BYTES // 1000} kB, far "
                          f"more than any config; pass the YAML config, not a data file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not UTF-8 text (binary, or another encoding such "
                          f"as UTF-16); save it as UTF-8 YAML") from None
    try:
        loaded = _bounded(yaml.load(text, Loader=_StrictLoader), f"config file {p}")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}; fix its syntax") from None
    except RecursionError:
        raise ConfigError(f"config file {p} is nested too deeply for a config; write its "
                          f"sections as plain mappings") from None
    except ConfigError as e:
        if "appears twice" not in str(e):
            raise
        raise ConfigError(f"config file {p}: {e}") from None
    if loaded is None:
        raise ConfigError(f"config file {p} is empty (or only comments); write at least one "
                          f"section, e.g. start from configs/quickstart.yaml")
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, not {type(loaded).__name__}")
    return loaded


def parse_value(text: str, where: str) -> Any:
    """One ``--set`` value, parsed as YAML with the same limits as a config file."""
    return _bounded(yaml.load(text, Loader=_StrictLoader), where)
