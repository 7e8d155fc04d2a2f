"""One delivery against real loopback receivers: what each failure is called, which are
tried again, and that no message quotes the URL."""

from __future__ import annotations

import asyncio
import socket

from runbook.notify.delivery import post
from runbook.notify.urls import SecretUrl
from runbook.sandbox.app import create_app
from tests.support.receiver import Receiver
from tests.support.servers import Certificate, serve_https


async def no_wait(seconds: float) -> None:
    pass


def deliver(url: str, **options):
    return asyncio.run(post(SecretUrl(url), b"{}", "application/json", sleep=no_wait, **options))


def test_a_receiver_that_does_not_answer_in_time_is_tried_again() -> None:
    with Receiver(default="hang") as receiver:
        delivery = deliver(receiver.url("/s3cr3t"), timeout=0.2)
    assert (delivery.ok, delivery.attempts) == (False, 3)
    assert delivery.error == "no answer within 0.2s"
    assert len(receiver.received) == 3


def test_a_closed_port_is_a_connection_refused() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    delivery = deliver(f"http://127.0.0.1:{port}/s3cr3t", attempts=2)
    assert (delivery.ok, delivery.attempts) == (False, 2)
    assert delivery.error is not None
    assert delivery.error.startswith("cannot connect (Connect call failed (")
    assert "s3cr3t" not in delivery.error


def test_a_certificate_that_fails_verification_fails_at_once_without_the_url(
    certificate: Certificate,
) -> None:
    with serve_https(create_app(), certificate) as url:  # a CA nobody named
        delivery = deliver(url.replace("/api/v1", "/s3cr3t?k=v"))
    assert (delivery.ok, delivery.attempts) == (False, 1)  # not worth trying again
    assert delivery.error is not None and "the TLS connection to 127.0.0.1 failed" in delivery.error
    assert "s3cr3t" not in delivery.error and "k=v" not in delivery.error


def test_an_answer_is_delivered_on_the_first_2xx() -> None:
    with Receiver(answers=[502, 201]) as receiver:
        delivery = deliver(receiver.url())
    assert (delivery.ok, delivery.attempts, delivery.error) == (True, 2, None)
