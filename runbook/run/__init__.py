"""The rooms of one run, around the executor (runbook.executor): the run as planned
(``planned``), what a resume takes over (``resume``), the slots (``slots``), a step's
retries (``step``), one attempt's life (``attempt``), the sinks in their order (``bus``)
and the signals (``signals``); ``reasons`` holds the words they share."""
