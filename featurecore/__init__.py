"""featurecore: an embedded feature store for recommendation ranking.

>>> import featurecore as fc
>>> store = fc.FeatureStore.open("./featurecore-store")      # doctest: +SKIP
>>> store.apply("examples/recsys")                            # doctest: +SKIP
>>> matrix = store.get_features(fc.FeatureRequest(...))       # doctest: +SKIP
"""

from .errors import (
    AccessDeniedError,
    FeatureStoreError,
    FeatureUnavailableError,
    GenerationError,
    NotFoundError,
    RegistryError,
    ValidationError,
)
from ._core import pair_id
from .reasons import Reason
from .registry import Definitions, Registry, RegistryState, load_definitions, validate
from .serving import FeatureMatrix, FeatureRequest
from .store import FeatureStore
from .timestamps import TimestampBounds

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
