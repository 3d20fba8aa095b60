"""The few exceptions users of featurecore catch.

Every message names the object and field, shows the value received and says
how to fix it.
"""


class FeatureStoreError(Exception):
    """Base class of every error featurecore raises on purpose."""


class RegistryError(FeatureStoreError, ValueError):
    """A definition is invalid, or an apply would break a contract (a changed
    version, a mutated feature set, a lifecycle guard)."""

    def __init__(self, message: str, problems: "list[str] | None" = None):
        self.problems = list(problems) if problems else [message]
        super().__init__(message)


class NotFoundError(FeatureStoreError, KeyError):
    """A feature, group, feature set, model or entity that the registry does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ValidationError(FeatureStoreError, ValueError):
    """A batch of data (write, join input, request) is malformed; nothing was written."""


class OutOfRangeError(ValidationError, IndexError):
    """A position passed to the native core (a row ref, an index) is outside its
    table; an IndexError too, as pybind11 maps ``std::out_of_range``."""


class AccessDeniedError(FeatureStoreError, PermissionError):
    """The caller's purpose may not read a privacy class, or the tenant is not allowed."""


class FeatureUnavailableError(FeatureStoreError):
    """A feature whose default policy is `fail` was missing for its reason (``.reason``,
    a missing-reason name such as ``"timeout"``; the HTTP server answers 504 for it)."""

    def __init__(self, message: str, reason: str = ""):
        self.reason = reason
        super().__init__(message)


class GenerationError(FeatureStoreError):
    """A generation file (a resident group's shared, memory-mapped snapshot) is missing,
    truncated, corrupt or of another schema: it is refused, never served; the group is
    built from RocksDB instead. Rebuild it with ``featurecore snapshot build``."""


def check_flag(value: object, argument: str) -> bool:
    """``value`` when it is a bool, else a ValidationError naming ``argument``: a truthy
    string such as ``"no"`` would otherwise silently mean True."""
    if not isinstance(value, bool):
        raise ValidationError(f"{argument} must be True or False, got {value!r}")
    return value
