"""Configuration dataclasses that round-trip through JSON, config files layered under
flags, and where the shipped presets live.

``to_dict`` / ``from_dict`` are strict: an unknown key or a wrong type names the field, so a
hand-edited config fails clearly instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from gcmr.errors import ConfigError

T = TypeVar("T", bound="JsonConfig")

# model + training presets shipped with the package (src/gcmr/presets/*.json, package data);
# read by gcmr.train.config.load_preset
PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return tp.from_dict(value, where=where) if issubclass(tp, JsonConfig) else tp(**value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


class JsonConfig:
    """Mixin for ``@dataclass`` configs: ``to_dict``, ``from_dict``, ``to_json``, ``from_json``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], *, where: str | None = None) -> T:
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object, got {data!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(fields)}")
        kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str, *, where: str | None = None) -> T:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where or cls.__name__}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, where=where)

    @classmethod
    def from_file(cls: type[T], path: str | Path) -> T:
        path = Path(path)
        return cls.from_json(path.read_text(encoding="utf-8"), where=str(path))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def config_file_fields(cls: type[T], path: str | Path) -> dict[str, Any]:
    """The fields a ``--config`` JSON file of ``cls`` sets, checked by ``cls`` (errors name the
    file and the field), so that only those override what lies below them (defaults, a
    preset) and flags override them in turn."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    config = cls.from_file(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: getattr(config, k) for k in data}


def preset_names() -> list[str]:
    """Names of the shipped presets (``gcmr train --preset NAME``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def preset_path(name_or_path: str | Path) -> Path:
    """A shipped preset's file, or ``name_or_path`` itself when it names a JSON file."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".json") or "/" in text or "\\" in text:
        if not path.is_file():
            raise ConfigError(f"{path}: no such preset file")
        return path
    shipped = PRESETS_DIR / f"{text}.json"
    if not shipped.is_file():
        raise ConfigError(f"unknown preset {text!r}: the shipped presets are "
                          f"{', '.join(preset_names()) or 'none'} (or give a FILE.json)")
    return shipped
