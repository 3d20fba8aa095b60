"""featurecore: an embedded feature store for recommendation ranking.

>>> import featurecore as fc
>>> store = fc.FeatureStore.open("./featurecore-store")      # doctest: +SKIP
>>> store.apply("examples/recsys")                            # doctest: +SKIP
>>> matrix = store.get_features(fc.FeatureRequest(...))       # doctest: +SKIP

``import featurecore`` loads only the errors and ``Reason``; every other public name is
imported on first use (PEP 562), so a process that only needs the CLI's help, an error
class or a submodule does not pay for numpy, RocksDB and the registry at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import lazy
from .errors import (
    AccessDeniedError,
    FeatureStoreError,
    FeatureUnavailableError,
    GenerationError,
    NotFoundError,
    RegistryError,
    ValidationError,
)
from .reasons import Reason

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from ._core import pair_id
    from .registry import Definitions, Registry, RegistryState, load_definitions, validate
    from .serving import FeatureMatrix, FeatureRequest
    from .store import FeatureStore
    from .timestamps import TimestampBounds

#: Public name -> the module that defines it (imported when the name is first read).
_LAZY = {
    "pair_id": "._core",
    "Definitions": ".registry",
    "Registry": ".registry",
    "RegistryState": ".registry",
    "load_definitions": ".registry",
    "validate": ".registry",
    "FeatureMatrix": ".serving",
    "FeatureRequest": ".serving",
    "FeatureStore": ".store",
    "TimestampBounds": ".timestamps",
}


def __getattr__(name: str) -> Any:
    return lazy.load(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy.names(__name__, _LAZY)


__all__ = [
    "AccessDeniedError",
    "Definitions",
    "FeatureMatrix",
    "FeatureRequest",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureUnavailableError",
    "GenerationError",
    "NotFoundError",
    "Reason",
    "Registry",
    "RegistryError",
    "RegistryState",
    "TimestampBounds",
    "ValidationError",
    "load_definitions",
    "pair_id",
    "validate",
]
