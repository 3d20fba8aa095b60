"""The example features repos shipped inside the package.

>>> import featurecore.examples
>>> featurecore.examples.path()           # doctest: +SKIP
PosixPath('.../site-packages/featurecore/examples/recsys')
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NotFoundError

_HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """The names of the bundled example repos (``["recsys"]``)."""
    return sorted(p.name for p in _HERE.iterdir() if p.is_dir() and not p.name.startswith("_"))


def path(name: str = "recsys") -> Path:
    """The folder of the bundled example features repo ``name``, wherever the package is
    installed: ``store.apply(featurecore.examples.path())``.

    Raises:
        NotFoundError: no example of that name.
    """
    folder = _HERE / name
    if not isinstance(name, str) or "/" in name or not folder.is_dir():
        raise NotFoundError(f"no bundled example repo {name!r}; known: {', '.join(names())}")
    return folder
