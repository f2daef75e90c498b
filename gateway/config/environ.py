"""``${VAR}`` and ``${VAR:-default}`` in any string of the config, from the environment.

An unset variable without a default is a problem naming the variable and the key path;
``$$`` is a literal ``$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?")


def _substitute(value: str, path: str, environ: Mapping[str, str], problems: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name is None:
            problems.append(
                f"{path}: malformed variable reference (use ${{NAME}} or ${{NAME:-default}})"
            )
            return ""
        value = environ.get(name)
        if value:
            return value
        if default is not None:  # shell semantics: unset *or empty* takes the default
            return default
        if value is not None:
            return value
        problems.append(f"{path}: environment variable {name} is not set")
        return ""

    return _ENV_REF.sub(replace, value)


def expand(
    value: object, path: str, environ: Mapping[str, str], problems: list[str], failed: set[str]
) -> object:
    """Substitute ``${VAR}`` in every string of the tree, once; remember which paths failed."""
    if isinstance(value, str):
        before = len(problems)
        result = _substitute(value, path, environ, problems)
        if len(problems) > before:
            failed.add(path)
        return result
    if isinstance(value, list):
        return [expand(v, f"{path}[{i}]", environ, problems, failed) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: expand(v, f"{path}.{k}" if path else str(k), environ, problems, failed)
            for k, v in value.items()
        }
    return value
