"""The configuration: one YAML file, with ``${VAR}`` substitution, validated into frozen
settings.

What lives here: the settings value objects (``settings``, a leaf that imports nothing from
the gateway), reading the file (``loader``), environment substitution (``environ``), the
field parsers (``fields``: durations, sizes, listen addresses, URLs) and validation
(``validate``: every problem at once, each naming its key path). What does not: what the
settings mean at run time; each part reads its own section.
"""

from gateway.config.fields import check_bind, parse_duration, parse_size
from gateway.config.loader import (
    DEFAULT_CONFIG_FILE,
    ENV_CONFIG,
    default_config_path,
    load_settings,
    parse_settings,
)
from gateway.config.settings import (
    AccessSettings,
    ConfigError,
    IdentitySettings,
    LoginSettings,
    OfficialAccountSettings,
    SentinelSettings,
    ServerSettings,
    SessionSettings,
    Settings,
    StateSettings,
    UpstreamSettings,
    WeChatSettings,
    WeComSettings,
)
from gateway.config.validate import validate

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_CONFIG",
    "AccessSettings",
    "ConfigError",
    "IdentitySettings",
    "LoginSettings",
    "OfficialAccountSettings",
    "SentinelSettings",
    "ServerSettings",
    "SessionSettings",
    "Settings",
    "StateSettings",
    "UpstreamSettings",
    "WeChatSettings",
    "WeComSettings",
    "check_bind",
    "default_config_path",
    "load_settings",
    "parse_duration",
    "parse_settings",
    "parse_size",
    "validate",
]
