"""Governance: the lifecycle workflow, access per tenant with audit and consent, entity
deletion with tombstones, batch lineage and latency SLA gates."""

from ..registry.provenance import BatchLineage, ages_from_lineage, lineage_for, record_lineage
from ..access import AccessAudit, AccessPolicy, ConsentRegistry, Denial, tenant_denial
from ..registry.deploy import assert_materializable, assert_trainable
from .deletion import (
    DeletionReceipt,
    PendingDeletion,
    Tombstones,
    delete_entity,
    deletion_log,
    pending_deletions,
    resume_deletions,
)
from .lifecycle import (
    Dependents,
    archive,
    dependents_of,
    deprecate,
    remove_from_online,
)
from .sla import SlaResult, assert_meets_availability, assert_meets_sla, gate_get_features, measure_get_features

__all__ = [
    "AccessAudit",
    "AccessPolicy",
    "BatchLineage",
    "ConsentRegistry",
    "DeletionReceipt",
    "Denial",
    "Dependents",
    "PendingDeletion",
    "SlaResult",
    "Tombstones",
    "ages_from_lineage",
    "archive",
    "assert_materializable",
    "assert_meets_availability",
    "assert_meets_sla",
    "assert_trainable",
    "delete_entity",
    "deletion_log",
    "dependents_of",
    "deprecate",
    "gate_get_features",
    "lineage_for",
    "measure_get_features",
    "pending_deletions",
    "record_lineage",
    "remove_from_online",
    "resume_deletions",
    "tenant_denial",
]
