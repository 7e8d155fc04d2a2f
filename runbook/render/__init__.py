"""Renderers: everything runbook prints goes through here, to an injected stream."""
