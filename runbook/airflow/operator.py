"""The operators of an exported DAG: one :class:`NexadataWorkflowOperator` per step, and
a :class:`PlanOutcomeOperator` that ends the DAG run as ``apply`` would end the run.

A step task's try, in order:

1. Read the step's record from the task state store. An execution triggered by an
   earlier try and not seen to end is polled again (deferred to its trigger), never
   triggered anew. A try that died between its ``POST`` and the answer left the outcome
   unknown: the task fails without retries, as ``apply`` does.
2. Judge ``run_if`` on the upstreams' task states, and the stop in force: a step that
   must not start ends ``skipped`` with the reason in its log.
3. Wait for a slot while ``max_parallel`` executions are in flight in the DAG run
   (deferred tasks hold no Airflow slot, so Airflow's ``max_active_tasks`` cannot say).
4. Record *triggering*, ``POST``, record the execution id (before anything else), then
   defer to :class:`~runbook.airflow.trigger.NexadataExecutionTrigger`: no worker slot
   is held while the execution runs.
5. When the trigger fires: succeeded returns; failed raises a plain exception, which
   Airflow retries while the step's ``retries`` last; anything else (timed out, the
   API's refusal) raises :class:`AirflowFailException`, which it does not retry.

Only Airflow's Task SDK is imported at parse time, and runbook's pure rules: the API
client loads when a task runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSkipException,
)

from runbook.airflow import rules
from runbook.conditions import is_cleanup
from runbook.schedule import OnFailure

__all__ = ["NexadataWorkflowOperator", "PlanOutcomeOperator"]

DEFAULT_CONN_ID = "nexadata_default"
SLOT_WAIT = (1.0, 30.0)
"""A task waiting for a free slot looks again after its poll interval, within these."""


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class NexadataWorkflowOperator(BaseOperator):  # type: ignore[misc]
    """Run one Nexadata workflow as one plan step: trigger, record, defer, judge.

    ``run_if``/``on_failure`` are the step's (defaults and ``finally`` applied);
    ``timeout`` bounds an attempt from its trigger to its end; ``poll_interval`` and
    ``max_poll_interval`` shape the trigger's polling; ``conn_id`` names the Airflow
    connection holding the API's base URL (``host``) and the token (``password``);
    ``base_url`` is the plan's, used when the connection has no host. ``retries`` and
    ``retry_delay`` are Airflow's own, and apply to failed executions only.
    """

    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        workflow_id: int,
        run_if: str | Mapping[str, str | list[str]] = "success",
        on_failure: OnFailure = "stop",
        timeout: float | timedelta = 6 * 3600.0,
        poll_interval: float | timedelta = 5.0,
        max_poll_interval: float | timedelta = 60.0,
        conn_id: str = DEFAULT_CONN_ID,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.workflow_id = workflow_id
        self.policy = rules.Policy(rules.run_if(run_if), on_failure)
        self.run_if = run_if
        self.on_failure = on_failure
        self.step_timeout = _seconds(timeout)
        self.poll_interval = _seconds(poll_interval)
        self.max_poll_interval = _seconds(max_poll_interval)
        self.conn_id = conn_id
        self.base_url = base_url

    # -- the try --------------------------------------------------------------------

    def execute(self, context: Any) -> Any:
        store = context["task_state_store"]
        record = rules.Record.load(store.get(rules.KEY))
        if record is not None and record.live:
            self.log.info(
                "re-attaching to execution %s of workflow %s, triggered by an earlier try: "
                "it is polled, not triggered again",
                record.execution_id,
                self.workflow_id,
            )
            self._defer(record)
        if record is not None and record.ambiguous:
            store.set(rules.KEY, record.ended("unknown").dump())
            raise AirflowFailException(
                f"trigger outcome unknown for workflow {self.workflow_id}: an earlier try "
                "ended while its trigger was under way, so an execution may exist; it is "
                "not triggered again automatically. Check Nexadata, then clear this task "
                "to trigger it again."
            )
        states = self._states(context)
        self._judge(states)
        self._wait_for_slot(context)
        if record is not None and record.state == "unknown":
            self.log.warning(
                "an earlier try's trigger outcome was unknown; this try was started by "
                "hand (cleared), so workflow %s is triggered again",
                self.workflow_id,
            )
        self._trigger(store, record or rules.Record("triggering"))

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> Any:
        store = context["task_state_store"]
        record = rules.Record.load(store.get(rules.KEY)) or rules.Record("running")
        state = str(event.get("state"))
        ident = event.get("execution_id")
        ended: rules.RecordState = (
            state if state in ("succeeded", "failed", "timed out") else "error"  # type: ignore[assignment]
        )
        store.set(rules.KEY, record.ended(ended).dump())
        what = f"execution {ident} of workflow {self.workflow_id}"
        match state:
            case "succeeded":
                self.log.info("%s succeeded", what)
                return {"execution_id": ident, "state": state, "workflow_id": self.workflow_id}
            case "failed":
                errors = "; ".join(str(e) for e in event.get("errors") or ()) or "no error given"
                reason = f"{what} failed: {errors}"
                stop = rules.stopped_by(self._policies(), self._states(context))
                if not is_cleanup(self.policy.run_if) and stop is not None:
                    raise AirflowFailException(f"{reason} (not retried: {stop})")
                raise AirflowException(reason)  # Airflow retries it while retries last
            case "timed out":
                raise AirflowFailException(f"{what}: {event.get('detail')}")
            case _:
                raise AirflowFailException(f"{what}: {event.get('detail') or state}")

    # -- steps of a try -------------------------------------------------------------

    def _judge(self, states: Mapping[str, str | None]) -> None:
        upstreams = {name: self._policies()[name] for name in self._upstream_steps()}
        verdict = rules.judge(
            self.policy, upstreams, states, rules.stopped_by(self._policies(), states)
        )
        if verdict is not None:
            self.log.info("%s: %s", verdict.state, verdict.reason)
            raise AirflowSkipException(f"{verdict.state}: {verdict.reason}")
        if self.policy.run_if != "success":
            self.log.info("starting: %s", rules.start_reason(self.policy, upstreams, states))

    def _wait_for_slot(self, context: Any) -> None:
        """Hold off while ``max_parallel`` executions are in flight in this DAG run:
        every deferred step task polls one, and every running one (this one included)
        may be about to trigger one. A task that waits is rescheduled, holding nothing."""
        limit = getattr(self.dag, "max_active_tasks", None)
        if not limit:
            return
        ti = context["ti"]
        busy = ti.get_ti_count(
            dag_id=ti.dag_id,
            run_ids=[ti.run_id],
            task_ids=sorted(self._policies()),
            states=["running", "deferred"],
        )
        if busy <= limit:
            return
        low, high = SLOT_WAIT
        wait = min(high, max(low, self.poll_interval))
        self.log.info(
            "%s executions in flight or starting (max_parallel %s): waiting %.0f s for a slot",
            busy - 1,
            limit,
            wait,
        )
        raise AirflowRescheduleException(datetime.now(timezone.utc) + timedelta(seconds=wait))

    def _trigger(self, store: Any, before: rules.Record) -> None:
        from runbook.errors import ApiError, ConfigError, TriggerOutcomeUnknown

        record = before.triggering()
        store.set(rules.KEY, record.dump())  # a try that dies from here on leaves it unknown
        try:
            execution = asyncio.run(self._post())
        except TriggerOutcomeUnknown as error:
            store.set(rules.KEY, record.ended("unknown").dump())
            raise AirflowFailException(
                f"{error}. Not retried: a new trigger could run the workflow twice. "
                "Check Nexadata, then clear this task to trigger it again."
            ) from None
        except (ConfigError, ApiError) as error:
            store.set(rules.KEY, record.ended("error").dump())
            raise AirflowFailException(str(error)) from None
        record = record.triggered(execution.id, execution.state)
        try:
            store.set(rules.KEY, record.dump())
        except Exception as error:
            raise AirflowFailException(
                f"execution {execution.id} of workflow {self.workflow_id} was triggered but "
                f"could not be recorded ({type(error).__name__}); not retried, since a retry "
                "could not find it and would trigger the workflow again"
            ) from None
        self.log.info(
            "triggered workflow %s: execution %s (attempt %s)",
            self.workflow_id,
            execution.id,
            len(record.executions),
        )
        self._defer(record)

    async def _post(self) -> Any:
        from airflow.sdk import BaseHook

        from runbook.airflow.trigger import _proxy, target
        from runbook.api import NexadataClient

        try:
            conn = BaseHook.get_connection(self.conn_id)
        except Exception as error:
            from runbook.errors import ConfigError

            raise ConfigError(
                f"cannot read the Airflow connection {self.conn_id!r}: {error}"
            ) from None
        url, credentials = target(conn, self.conn_id, self.base_url)
        try:
            async with NexadataClient(url, credentials, max_in_flight=1, proxy=_proxy(url)) as api:
                return await asyncio.wait_for(api.trigger(self.workflow_id), self.step_timeout)
        finally:
            await credentials.aclose()

    def _defer(self, record: rules.Record) -> None:
        from runbook.airflow.trigger import NexadataExecutionTrigger

        assert record.execution_id is not None and record.triggered_at is not None
        deadline = record.triggered_at + self.step_timeout
        self.log.info(
            "polling execution %s in the triggerer (timeout at %s); no worker slot is held",
            record.execution_id,
            datetime.fromtimestamp(deadline, timezone.utc).isoformat(timespec="seconds"),
        )
        self.defer(
            trigger=NexadataExecutionTrigger(
                execution_id=record.execution_id,
                workflow_id=self.workflow_id,
                conn_id=self.conn_id,
                base_url=self.base_url,
                triggered_at=record.triggered_at,
                deadline=deadline,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
            ),
            method_name="execute_complete",
        )

    # -- the DAG run ----------------------------------------------------------------

    def _policies(self) -> dict[str, rules.Policy]:
        return _policies(self.dag)

    def _upstream_steps(self) -> list[str]:
        policies = self._policies()
        return sorted(name for name in self.upstream_task_ids if name in policies)

    def _states(self, context: Any) -> dict[str, str | None]:
        return _states(context)


class PlanOutcomeOperator(BaseOperator):  # type: ignore[misc]
    """The DAG run's last task: it fails exactly when ``apply`` would exit 1 — a step
    failed other than under ``on_failure: ignore`` — also when a clean-up step
    succeeded after the failure it cleans up. (Airflow ends a DAG run by the states of
    its last tasks; this is the only last task.)"""

    ui_color = "#f4f4f4"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def execute(self, context: Any) -> Any:
        states = _states(context)
        policies = _policies(self.dag)
        failed, ignored = rules.failures(policies, states)
        counts: dict[str, int] = {}
        for name in policies:
            shown = rules.plan_state(states.get(name))
            counts[shown] = counts.get(shown, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        tail = f" ({len(ignored)} failure ignored: {', '.join(ignored)})" if ignored else ""
        if failed:
            raise AirflowFailException(
                f"the run failed: {', '.join(failed)} failed; {summary}{tail}"
            )
        self.log.info("the run succeeded: %s%s", summary, tail)
        return {"state": "succeeded", "steps": counts}


def _policies(dag: Any) -> dict[str, rules.Policy]:
    return {
        task.task_id: task.policy
        for task in dag.tasks
        if isinstance(task, NexadataWorkflowOperator)
    }


def _states(context: Any) -> dict[str, str | None]:
    ti = context["ti"]
    found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
    states = found.get(ti.run_id, {})
    return {name: None if state is None else str(state) for name, state in states.items()}
