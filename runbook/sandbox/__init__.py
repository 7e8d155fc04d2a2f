"""The built-in Nexadata simulator: scenario, ASGI app, uvicorn server."""

SANDBOX_TOKEN = "sandbox"
"""The token the simulator accepts unless told another: everyone knows it, so it serves
loopback only."""
