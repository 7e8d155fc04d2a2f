"""runbook: run chains of Nexadata workflows from a plan kept in git."""

import sys

__version__ = "0.1.0"

# httpx's package imports its own command-line client (httpx._main), which loads click,
# rich.progress, rich.syntax and pygments whenever they are installed: 40 ms at every
# start for a tool runbook never runs. A None in sys.modules makes that one import fail
# (the import system's documented meaning of None), and httpx then defines its stub
# `main` instead. Nothing else of httpx changes; if httpx is already loaded, neither
# does this.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
