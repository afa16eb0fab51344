"""Provider settings from the environment and an optional file: one parser for every plugin.

``ProviderConfig.load("STYX_AWS_")`` reads the process environment and, when
``STYX_AWS_CONFIG_FILE`` names one (or ``path`` is given), a YAML or JSON file holding a
mapping of settings. A file key is a variable name with or without the prefix, in either
case: an upper-case key is a full name, another gets the prefix (``regions`` and
``STYX_AWS_REGIONS`` are the same setting); lists become
comma-separated values and booleans ``1`` / ``0``. The environment wins over the file.

The typed readers raise ``ConfigError`` naming the variable and the fix, never a bare
``ValueError``; a provider reports it from ``check()``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting is missing or malformed: ``reason`` names the variable, ``hint`` the fix."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


class ProviderConfig:
    """Settings of one provider, looked up by full variable name (``STYX_AWS_REGIONS``)."""

    def __init__(self, values: Mapping[str, str], prefix: str = "") -> None:
        self._values = dict(values)
        self.prefix = prefix

    @classmethod
    def load(cls, prefix: str, env: Mapping[str, str] | None = None, path: str | Path | None = None) -> ProviderConfig:
        """The environment (default ``os.environ``) over the settings file, if any."""
        env = os.environ if env is None else env
        file_name = path or env.get(f"{prefix}CONFIG_FILE", "").strip()
        values = _read_file(Path(file_name).expanduser(), prefix) if file_name else {}
        values.update(env)
        return cls(values, prefix)

    def get(self, name: str, default: str = "") -> str:
        """The setting's text, stripped; ``default`` when unset or blank."""
        text = str(self._values.get(name, "")).strip()
        return text or default

    def is_set(self, name: str) -> bool:
        """True when the setting has a non-blank value."""
        return bool(self.get(name))

    def csv(self, name: str) -> list[str]:
        """A comma-separated list, blanks dropped."""
        return [part.strip() for part in self.get(name).split(",") if part.strip()]

    def pairs(self, name: str, example: str = "key=value") -> dict[str, str]:
        """Comma-separated ``KEY=VALUE`` pairs."""
        out = {}
        for part in self.csv(name):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ConfigError(f"{name}: {part!r} is not KEY=VALUE", f"write e.g. {name}={example}")
            out[key.strip()] = value.strip()
        return out

    def number(self, name: str, default: float, *, positive: bool = False) -> float:
        """A number >= 0 (> 0 when ``positive``); ``default`` when unset."""
        text = self.get(name)
        if not text:
            return default
        bound = "a positive number" if positive else "a number >= 0"
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{name}: {text!r} is not a number", f"set {name} to {bound}") from None
        if value < 0 or (positive and value == 0) or value != value:
            raise ConfigError(f"{name}: must be {bound}, got {text}", f"set {name} to {bound}")
        return value

    def integer(self, name: str, default: int, *, positive: bool = False) -> int:
        """A whole number >= 0 (> 0 when ``positive``); ``default`` when unset."""
        value = self.number(name, default, positive=positive)
        if value != int(value):
            raise ConfigError(f"{name}: {self.get(name)!r} is not a whole number", f"set {name} to e.g. {int(value)}")
        return int(value)

    def flag(self, name: str, default: bool) -> bool:
        """A yes/no setting (1/0, true/false, yes/no, on/off)."""
        text = self.get(name).lower()
        if not text:
            return default
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{name}: {text!r} is not a yes/no value", f"set {name} to 1 or 0")

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Settings whose names start with ``prefix``, by the rest of the name, lower-cased
        (``STYX_AZURE_SUBNET_ID_WESTUS2`` under ``STYX_AZURE_SUBNET_ID_`` -> ``westus2``)."""
        return {
            name[len(prefix) :].lower(): str(value).strip()
            for name, value in self._values.items()
            if name.startswith(prefix) and len(name) > len(prefix) and str(value).strip()
        }


def _read_file(path: Path, prefix: str) -> dict[str, str]:
    """The settings of a YAML / JSON file as variable name -> text."""
    name = f"{prefix}CONFIG_FILE"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path} ({exc.strerror})", f"point {name} at a readable file") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's subclasses alike
        raise ConfigError(f"{name}: {path} is not valid: {exc}", "fix the file's syntax") from None
    except Exception as exc:  # yaml.YAMLError is not a ValueError
        raise ConfigError(f"{name}: {path} is not valid YAML: {type(exc).__name__}", "fix the file's syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: {path} must hold a mapping of settings", "write e.g. `regions: [us-east-1]`")
    out = {}
    for key, value in data.items():
        # An upper-case key is a full variable name (AZURE_SUBSCRIPTION_ID); another is
        # a setting's short name, which gets the provider's prefix (regions -> STYX_AWS_REGIONS).
        name = str(key)
        out[name if name.isupper() else f"{prefix}{name.upper()}"] = _text(value)
    return out


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={_text(v)}" for k, v in value.items())
    return "" if value is None else str(value)
