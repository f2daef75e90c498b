"""Reading the config file: YAML, with duplicate keys refused.

``load_settings`` reads a file, ``parse_settings`` its text; both hand the tree to
``gateway.config.validate`` and raise ``ConfigError`` listing every problem.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway.config.settings import ConfigError, Settings
from gateway.config.validate import validate

ENV_CONFIG = "WECHAT_GATEWAY_CONFIG"
DEFAULT_CONFIG_FILE = "gateway.yaml"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "keys must be plain names", key_node.start_mark
            )
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def default_config_path() -> Path:
    return Path(os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG_FILE)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, substitute and validate a config file; raise ConfigError listing every problem."""
    file = Path(path) if path is not None else default_config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{file}: config file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{file}: is a directory, not a config file"]) from None
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read config file ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{file}: config file is not UTF-8 text"]) from None
    return parse_settings(text, source=str(file))


def parse_settings(
    text: str, *, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> Settings:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {_describe_yaml_error(exc)}"]) from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        # A tagged scalar (!!int, !!timestamp...) that does not parse: the library's message
        # quotes the value, which may be a secret, so it is not repeated.
        raise ConfigError([f"{source}: invalid YAML: a tagged value cannot be read"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of keys"])
    return validate(raw, os.environ if environ is None else environ)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "cannot parse"
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)
