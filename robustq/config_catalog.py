"""The configs shipped inside robustq, by name, and the reference of every config key.

Bundled configs are package data (``robustq/configs/*.yaml``; the source tree's top-level
``configs/`` is a link to that folder, so there is one copy). ``resolve_config`` turns what a
user typed after ``robustq train`` into a file: an existing path always wins; otherwise
``quickstart``, ``quickstart.yaml`` and ``configs/quickstart.yaml`` all name the bundled
file, so the README's commands work from any folder and from a non-editable install.

``config_keys`` walks the ``RunConfig`` dataclasses and returns every dotted key with its
default, its type and one line of help, taken from the comment written after the field in
``config.py`` (or from the section's docstring), so the reference cannot drift from the code.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError


def bundled_dir() -> Path:
    return Path(str(resources.files("robustq") / "configs"))


def bundled_configs() -> dict[str, Path]:
    """``{name: path}`` for every config shipped with robustq, sorted by name."""
    return {p.stem: p for p in sorted(bundled_dir().glob("*.yaml"))}


def describe(path: Path, width: int = 100) -> str:
    """The first sentence of a config's leading comment (what the experiment is), cut at a
    comma to about ``width`` characters."""
    head = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        head.append(line.lstrip("#").strip())
    first = re.split(r"(?<=[\w)])\.\s+(?=[A-Z])", " ".join(head), maxsplit=1)[0].rstrip(".")
    if len(first) > width:
        first = first[:first.rfind(",", 0, width)] + ", ..."
    return first


def bundled_name(spec: str) -> Optional[str]:
    """The bundled config that ``spec`` names (``NAME``, ``NAME.yaml``, ``configs/NAME.yaml``)."""
    p = Path(spec)
    if p.suffix in (".yaml", ".yml"):
        if p.parent not in (Path("."), Path("configs")):
            return None
        p = p.with_suffix("")
    elif str(p.parent) != ".":
        return None
    return p.name if p.name in bundled_configs() else None


def resolve_config(spec: str) -> Path:
    """The config file ``spec`` refers to: an existing file, else a bundled config."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = bundled_name(spec)
    if name is not None:
        return bundled_configs()[name]
    if path.is_dir():
        raise ConfigError(f"{spec} is a folder, not a config; give a YAML file or one of the "
                          f"bundled configs ({', '.join(bundled_configs())})")
    raise ConfigError(f"config file {spec} does not exist and no bundled config has that "
                      f"name; give a YAML file or one of: {', '.join(bundled_configs())}")


# --- the key reference ---------------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    key: str           # dotted, e.g. train.max_batches
    type: str          # as written in config.py, e.g. Optional[int]
    default: Any
    help: str


def field_comments(cls: type) -> dict[str, str]:
    """``{field: the comment at the end of its line}`` from the source of dataclass ``cls``."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source shipped: the reference loses only its help
        return {}
    out: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    line_field: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        row = tok.start[0]
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in names:
            line_field.setdefault(row, tok.string)
        elif tok.type == tokenize.COMMENT and row in line_field:
            out[line_field[row]] = tok.string.lstrip("#").strip()
    return out


def _type_text(tp: Any) -> str:
    """``int``, ``list[float]``, ``int or null``, ``float or str`` (the YAML reader's view)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        parts = [_type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is list:
        return f"list[{_type_text(args[0])}]"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> Any:
    from .eps import spelling
    if f.default is not dataclasses.MISSING:
        return spelling(f.default) if isinstance(f.default, float) else f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def config_keys(cls: Optional[type] = None, prefix: str = "") -> list[Key]:
    """Every config key under ``cls`` (default: ``RunConfig``), in declaration order."""
    if cls is None:
        from .config import RunConfig
        cls = RunConfig
    hints, comments = typing.get_type_hints(cls), field_comments(cls)
    out: list[Key] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += config_keys(tp, f"{prefix}{f.name}.")
            continue
        out.append(Key(prefix + f.name, _type_text(tp), _default(f), comments.get(f.name, "")))
    return out


def format_keys(keys: list[Key]) -> str:
    """A plain-text table: key, type, default, help (YAML spelling of the default)."""
    import yaml

    def show(v: Any) -> str:
        return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()

    rows = [("key", "type", "default", "help")] + [(k.key, k.type, show(k.default), k.help)
                                                  for k in keys]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3]
                     for r in rows)
