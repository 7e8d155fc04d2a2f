"""What the tests share that is not a fixture, one module for each thing it serves:
``paths``, ``clocks``, ``entry`` (the real console script), ``night`` (the apply tests'
plan and token), ``servers`` (misbehaving loopback servers and TLS), ``receiver``
(webhooks and pings), ``proxy`` and ``connect_proxy``."""
