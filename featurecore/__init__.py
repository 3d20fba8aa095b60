"""featurecore: an embedded feature store for recommendation ranking."""

from .errors import (
    AccessDeniedError,
    FeatureStoreError,
    FeatureUnavailableError,
    NotFoundError,
    RegistryError,
    ValidationError,
)
from .reasons import Reason

__all__ = [
    "AccessDeniedError",
    "FeatureStoreError",
    "FeatureUnavailableError",
    "NotFoundError",
    "Reason",
    "RegistryError",
    "ValidationError",
]
