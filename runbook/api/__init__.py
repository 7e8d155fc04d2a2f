"""The Nexadata API client, split as httpx splits its own.

- :mod:`~runbook.api.secrets`: secrets that never show themselves, and the redactor;
- :mod:`~runbook.api.sources`: what a token source is, and the environment and token
  file kinds; :mod:`~runbook.api.tokencommand`: the token command;
  :mod:`~runbook.api.oauth`: the OAuth 2.0 client source; :mod:`~runbook.api.cache`: the
  credential cache and its lock; :mod:`~runbook.api.credentials`: the refresh flow
  (:class:`Credentials`), when a source is asked again;
- :mod:`~runbook.api.models`: what the API answers, read;
- :mod:`~runbook.api.pacing`: the retry policy and the shared request budget;
- :mod:`~runbook.api.urls`: where a secret may be sent;
- :mod:`~runbook.api.client`: the client, one layer a concern.
"""

from __future__ import annotations

from runbook.api.client import Call, NexadataClient
from runbook.api.credentials import Credentials
from runbook.api.models import TERMINAL_STATES, Execution
from runbook.api.pacing import RateBudget, RetryPolicy
from runbook.api.secrets import Redactor, Secret, Token
from runbook.api.sources import Issued, TokenSource
from runbook.api.urls import check_base_url, check_token_url

__all__ = [
    "TERMINAL_STATES",
    "Call",
    "Credentials",
    "Execution",
    "Issued",
    "NexadataClient",
    "RateBudget",
    "Redactor",
    "RetryPolicy",
    "Secret",
    "Token",
    "TokenSource",
    "check_base_url",
    "check_token_url",
]
