"""Telling people and monitoring how a run goes: webhooks, healthchecks pings, and a
Prometheus textfile. Each is a sink of the executor's events whose deliveries are
bounded in time and never change the run's outcome or exit code.

- :mod:`~runbook.notify.urls`: the secret URLs, read from the environment and checked
  before anything is sent;
- :mod:`~runbook.notify.delivery`: one POST, with bounded retries;
- :mod:`~runbook.notify.payloads`: what a webhook and a ping are sent;
- :mod:`~runbook.notify.notifier`: the sink for webhooks and pings;
- :mod:`~runbook.notify.metrics`: the sink for the textfile.
"""
