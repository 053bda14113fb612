"""``crystalforge serve``: a page and JSON API to generate, watch, inspect in 3D and download runs.

:func:`create_app` builds the ASGI app; :mod:`.jobs` is the one adapter to the generation
kernel; :mod:`.queue` runs one generation at a time; :mod:`.render` writes the standalone
viewer pages (``crystalforge view``, notebooks).
"""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(**kwargs):
    """Return the ASGI app (see :func:`crystalforge.web.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(**kwargs)
