"""Typed configuration: frozen dataclasses loaded from YAML and overridden by `key=value` arguments.

How a config is built (`load_config(cls, path, overrides)`):

1. the YAML file is read with `yaml.safe_load` (it must hold a mapping, or be empty);
2. each override `key=value` is applied on top; the value is parsed with `yaml.safe_load`, so
   `max_steps=3` is an int, `bf16=false` a bool, `rewards=[accuracy,format]` a list and `resume=` None;
   dotted keys reach nested dataclasses (`video.max_frames=4`);
3. the mapping is turned into the dataclass by `config_from_dict`, which checks every key (an unknown
   key is an error naming it and listing the valid ones, a missing required key is an error naming it; a
   section such as `video: {max_frames: 8}` is laid over that field's default, so it changes only the keys
   it names), coerces values to the annotated types (an int
   where a float is expected, a list where a tuple is expected, a string such as "1e-6" where a float is
   expected -- YAML 1.1 reads `1e-6` without a dot as a string), and refuses anything else;
4. every dataclass's `validate()` hook (if it has one) runs, nested ones first, so a bad combination
   fails before the first rollout. Errors are `ConfigError`s naming the dotted key (`video.max_frames: ...`).

`load_config(..., values=...)` also takes already-typed values (what command-line flags give), laid over the
file and under the `key=value` overrides.

Each command owns its config dataclass (`videor1.rl.config.RLConfig`, `videor1.sft.config.SFTConfig`,
`videor1.evaluate.config.EvalConfig`); this module holds only the generic machinery. The media sections they
share are the media specs themselves (`videor1.data.media.VideoSpec`, `ImageSpec`), used directly as field
types. Every field is documented by a comment beside it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key (dotted) and the reason.

    `key` (optional) is the offending field; the message is then ``"<key>: <reason>"``, and when the
    error comes from a nested section the loader prefixes the section (``video.max_frames: ...``).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        self.reason = message
        super().__init__(f"{key}: {message}" if key else message)

    def within(self, prefix: str) -> "ConfigError":
        """This error raised from the section `prefix` (``"video."``): the key or message gets the prefix."""
        if not prefix:
            return self
        if self.key is not None:
            return ConfigError(self.reason, key=f"{prefix}{self.key}")
        return ConfigError(f"{prefix.rstrip('.')}: {self}")


# ---------------------------------------------------------------------------------------- loading
def load_config(cls: type[T], path: str | Path | None, overrides: Sequence[str] = (),
                values: Mapping[str, Any] | None = None) -> T:
    """Read `path` (YAML; None for defaults only), set `values`, apply `key=value` overrides, build and
    validate `cls`.

    `values` maps (dotted) keys to Python values (what command-line flags give); they sit between the file
    and the `key=value` overrides. A None value means "not given" and leaves the key alone.
    """
    data = read_yaml(path) if path is not None else {}
    data = set_values(data, values or {})
    data = apply_overrides(data, overrides)
    return config_from_dict(cls, data)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file `path` ({} for an empty file); ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such config file: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}")
    return loaded or {}


def set_values(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `data` with each (dotted) key of `values` set; None values are skipped."""
    out = _deep_copy(data)
    for key, value in values.items():
        if value is not None:
            _set_dotted(out, key, value, key)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `data` with each `key=value` (dotted keys for nesting) set; values parsed as YAML."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        _set_dotted(out, key, value, f"override {item!r}")
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any, what: str) -> None:
    node = data
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{what}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, base: T | None = None, _prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, coercing types, refusing unknown keys, running validate().

    Keys missing from `data` take their value from `base` (an instance of `cls`) when given, else the field
    default. A section (a field whose type is a dataclass) given as a mapping is laid over that field's
    value in `base`, or its default instance, so ``video: {max_frames: 8}`` changes only max_frames of the default video section.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_prefix.rstrip('.') or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    renamed = getattr(cls, "RENAMED_KEYS", {})  # keys a class no longer has, with what replaced them
    if unknown and unknown[0] in renamed:
        raise ConfigError(f"config key '{_prefix}{unknown[0]}' of {cls.__name__} was replaced: use "
                          f"{renamed[unknown[0]]}")
    if unknown:
        raise ConfigError(f"unknown config key '{_prefix}{unknown[0]}' for {cls.__name__}; valid keys: "
                          f"{', '.join(sorted(fields))}")
    if base is not None:
        data = {**{name: getattr(base, name) for name in fields}, **data}
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing required key{'s' * (len(missing) > 1)} "
                          f"{', '.join(_prefix + name for name in missing)} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint, key = hints[name], f"{_prefix}{name}"
        section = None
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            section = getattr(base, name) if base is not None else _field_default(fields[name])
        if section is not None and isinstance(value, Mapping):
            kwargs[name] = config_from_dict(hint, value, base=section, _prefix=f"{key}.")
        else:
            kwargs[name] = _coerce(hint, value, key)
    try:
        obj = cls(**kwargs)  # a class that validates itself on construction (the media specs) raises here
    except TypeError as err:  # defensive: the required keys were checked above
        raise ConfigError(f"{_prefix or cls.__name__ + ': '}{err}") from None
    except ConfigError as err:
        raise err.within(_prefix) from None
    validate(obj, _prefix)
    return obj


def _field_default(f: dataclasses.Field) -> Any:
    """The default value of a dataclass field (calling its default_factory), or None without one."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def validate(cfg: Any, _prefix: str = "") -> None:
    """Run `validate()` on every nested dataclass, then on `cfg`; errors name the section."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, f"{_prefix}{f.name}.")
    hook = getattr(cfg, "validate", None)
    if callable(hook):
        try:
            hook()
        except ConfigError as err:
            raise err.within(_prefix) from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-ready dict of a config (tuples become lists, paths strings)."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write `config_to_dict(cfg)` as YAML (the file `load_config` reads back to an equal config)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------- type coercion
def _coerce(hint: Any, value: Any, key: str) -> Any:
    """`value` converted to type `hint`, or a ConfigError naming `key`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {hint}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        return config_from_dict(hint, value if value is not None else {}, _prefix=f"{key}.")  # type: ignore[arg-type]
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list):
        return _coerce_sequence(hint, origin, args, value, key)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    return _coerce_scalar(hint, value, key)


def _coerce_sequence(hint: Any, origin: Any, args: tuple, value: Any, key: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if args and len(args) == 2 and args[1] is Ellipsis:
        items = [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    elif args and origin is tuple:
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
        items = [_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
    else:
        elem = args[0] if args else Any
        items = [_coerce(elem, v, f"{key}[{i}]") for i, v in enumerate(value)]
    return list(items) if (origin is list or hint is list) else tuple(items)


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: cannot use {value!r} as {getattr(hint, '__name__', hint)}")


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
