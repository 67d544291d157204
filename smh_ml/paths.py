"""Where relative default paths resolve: never the working folder.

Run from another folder, a relative ``artifacts`` folder or sqlite store would put
runs and models there, and a later run from the project would not see them. Relative paths
(the defaults, and relative values of the ``SMH_*`` settings) resolve against
:func:`project_root` instead; absolute paths and server URIs are kept as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SMH_HOME"
SQLITE = "sqlite:///"


def project_root() -> Path:
    """``$SMH_HOME`` when set; else the source checkout this package runs from (the folder
    holding ``pyproject.toml`` beside ``smh_ml/``); else, for an installed package on a line
    PC, ``$XDG_DATA_HOME/smh-ml`` (``~/.local/share/smh-ml``)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "smh_ml").is_dir():
        return checkout
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "smh-ml"


def anchored(path: str | Path) -> Path:
    """``path`` if absolute, else under :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def anchored_uri(uri: str) -> str:
    """A tracking or artifact location with a relative file path anchored (``sqlite:///rel``,
    a plain relative path); absolute paths and other schemes (http, postgresql, s3, file:
    with an absolute path) unchanged."""
    if uri.startswith(SQLITE):
        rest = uri.removeprefix(SQLITE)
        return uri if rest.startswith("/") or rest.startswith(":memory:") else SQLITE + str(anchored(rest))
    if "://" in uri or uri.startswith("file:"):
        return uri
    return str(anchored(uri))
