"""runbook on Apache Airflow: the operator and trigger that a DAG file exported by
``runbook export airflow`` runs, on runbook's own API client.

This package is the only place that imports Airflow, and only when an operator is
looked up: ``runbook.airflow.dagfile`` (the exporter) and ``runbook.airflow.rules``
work without Airflow installed. Install the Airflow side with the ``airflow`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbook.airflow.operator import NexadataWorkflowOperator, PlanOutcomeOperator
    from runbook.airflow.trigger import NexadataExecutionTrigger

__all__ = ["NexadataExecutionTrigger", "NexadataWorkflowOperator", "PlanOutcomeOperator"]

_WHERE = {
    "NexadataWorkflowOperator": "runbook.airflow.operator",
    "PlanOutcomeOperator": "runbook.airflow.operator",
    "NexadataExecutionTrigger": "runbook.airflow.trigger",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
