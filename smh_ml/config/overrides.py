"""Variants of a profile: dotted-key overrides and the CLI's ``section.key=value`` settings.

A variant records its settings in its name and description (``bench+patching.patch=128``), so
reports and MLflow runs show which one ran.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from smh_ml.config.schema import Profile


def with_overrides(profile: Profile, overrides: dict[str, Any]) -> Profile:
    """Copy ``profile`` with dotted-key overrides, e.g. ``{"patching.patch": 32}``."""
    result = profile
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if not rest:
            result = dataclasses.replace(result, **{head: value})
            continue
        section = getattr(result, head)
        if not dataclasses.is_dataclass(section) or "." in rest:
            raise KeyError(f"cannot override {key!r} on profile {profile.name!r}")
        result = dataclasses.replace(result, **{head: dataclasses.replace(section, **{rest: value})})
    return result


def _coerce(current: Any, value: Any) -> Any:
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def apply_settings(profile: Profile, settings: Sequence[str]) -> Profile:
    """Apply ``section.key=value`` strings (values in JSON: ``128``, ``1e-3``, ``[128, 64]``,
    ``null``; anything else is a string) to ``profile``. The result's name and description
    record them (``bench+patching.patch=128``), so reports and MLflow runs show the variant."""
    if not settings:
        return profile
    overrides: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        head, _, rest = key.partition(".")
        section = getattr(profile, head, None)
        if not sep or not rest or not dataclasses.is_dataclass(section) \
                or rest not in {f.name for f in dataclasses.fields(section)}:
            raise KeyError(f"bad setting {item!r}: expected section.key=value with a key of profile "
                           f"{profile.name!r}, e.g. patching.patch=128")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides[key] = _coerce(getattr(section, rest), value)
    varied = dataclasses.replace(with_overrides(profile, overrides),
                                 settings=(*profile.settings, *(item.strip() for item in settings)))
    suffix = "+".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in overrides.items())
    return dataclasses.replace(varied, name=f"{profile.name}+{suffix}",
                               description=f"{profile.description} Overridden: {suffix.replace('+', ', ')}.")
