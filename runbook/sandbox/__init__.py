"""The built-in Nexadata simulator: scenario, ASGI app, uvicorn server."""
