"""The notifier's rules and the secret URLs, in-process on the virtual clock: which
deliveries each event makes, and how long the end of a run waits for them."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from runbook.errors import ConfigError
from runbook.events import (
    NotificationSent,
    RunFinished,
    RunLate,
    RunRecord,
    RunStarted,
    StepRecord,
)
from runbook.notify.delivery import Delivery
from runbook.notify.metrics import MetricsFile, metrics_path, plans_in
from runbook.notify.notifier import END_BUDGET, Notifier, Webhook
from runbook.notify.payloads import MAX_PING_BODY, ping_body, slack_literal, slack_payload
from runbook.notify.urls import SecretUrl, secret_url
from tests.support.clocks import VirtualClock

CLOCK = VirtualClock()


def a_run(state: str = "succeeded") -> RunRecord:
    step = StepRecord("load", 72, 1, state="succeeded")
    run = RunRecord(plan="night", run_id=3, max_parallel=4, steps={"load": step})
    run.state = state  # type: ignore[assignment]
    run.deadline = 60.0
    return run


class Sends:
    """A fake ``post``: records each call, answers with ``delivery`` or waits ``hang``
    seconds (of the virtual clock) first."""

    def __init__(self, delivery: Delivery | None = None, hang: float = 0.0) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.delivery = delivery or Delivery(True, 1)
        self.hang = hang

    async def __call__(self, url, body, content_type, *, tried, attempts=3):
        self.calls.append((url.reveal(), body))
        tried.append(1)
        await asyncio.sleep(self.hang)
        return self.delivery


def hook(events, url: str = "https://hooks.example.com/T/B/s", fmt="json") -> Webhook:
    return Webhook(SecretUrl(url), tuple(events), fmt)


def drive(notifier: Notifier, *events) -> list:
    """Feed ``events`` to the notifier in a loop on the virtual clock, as the executor
    would (awaiting what it returns); the NotificationSent it tells come back."""
    told: list = []
    notifier._tell = told.append

    async def main() -> None:
        for event in events:
            result = notifier(event)
            if result is not None:
                await result

    CLOCK.run(main())
    return told


def test_each_target_is_told_only_its_events_and_recovered_comes_with_success() -> None:
    sends = Sends()
    run = a_run()
    notifier = Notifier(
        [hook(["succeeded", "recovered"]), hook(["failed"]), hook(["recovered"], fmt="slack")],
        None,
        tell=lambda event: None,
        recovered=True,
        send=sends,
    )
    told = drive(notifier, RunStarted(run, 0), RunFinished(run, 1))
    bodies = [json.loads(body) for _, body in sends.calls]
    assert [body.get("event") for body in bodies] == ["succeeded", "recovered", None]
    assert bodies[2] == {
        "text": "runbook: run 3 of plan `night` succeeded again after an invocation that did "
        "not: 1 succeeded"
    }
    assert [(e.record.event, e.record.ok) for e in told] == [
        ("succeeded", True),
        ("recovered", True),
        ("recovered", True),
    ]
    assert all(isinstance(e, NotificationSent) for e in told)
    assert [r.event for r in run.notifications] == ["succeeded", "recovered", "recovered"]


def test_late_is_sent_once_and_not_again_when_an_earlier_invocation_sent_it() -> None:
    sends = Sends()
    run = a_run("failed")
    first = Notifier([hook(["late", "failed"])], None, tell=print, send=sends)
    drive(first, RunStarted(run, 0), RunLate(run, 1), RunLate(run, 2), RunFinished(run, 3))
    assert [json.loads(body)["event"] for _, body in sends.calls] == ["late", "failed"]
    resumed = Notifier([hook(["late"])], None, tell=print, late_told=True, send=sends)
    drive(resumed, RunStarted(run, 4), RunLate(run, 5), RunFinished(run, 6))
    assert len(sends.calls) == 2


def test_the_end_waits_for_what_it_sends_30_s_at_most_in_all() -> None:
    sends = Sends(hang=3600.0)  # receivers that never answer
    run = a_run("failed")
    notifier = Notifier(
        [hook(["failed", "late"]), hook(["failed"])],
        SecretUrl("https://hc-ping.com/uuid"),
        tell=print,
        send=sends,
    )
    started = None

    async def main() -> float:
        nonlocal started
        notifier(RunStarted(run, 0))
        notifier(RunLate(run, 1))  # a late notification still under way at the end
        started = CLOCK()
        await notifier(RunFinished(run, 2))  # type: ignore[misc]
        return CLOCK() - started

    waited = CLOCK.run(main())
    assert waited == pytest.approx(END_BUDGET)
    assert len(run.notifications) == 5  # start ping, late, two failed, the end ping
    assert all(not r.ok for r in run.notifications)
    assert {r.error for r in run.notifications} == {
        "not delivered within the 30s the end of a run waits"
    }


def test_the_end_ping_goes_after_the_start_ping_and_says_fail_when_not_succeeded() -> None:
    sends = Sends()
    ping = SecretUrl("https://hc.example.com/ping/u-1?rid=7")
    for state, path in (("failed", "/ping/u-1/fail?rid=7"), ("interrupted", "/ping/u-1/fail?rid=7"),
                        ("succeeded", "/ping/u-1?rid=7")):  # fmt: skip
        sends.calls.clear()
        run = a_run(state)
        drive(Notifier([], ping, tell=print, send=sends), RunStarted(run, 0), RunFinished(run, 1))
        assert [url for url, _ in sends.calls] == [
            "https://hc.example.com/ping/u-1/start?rid=7",
            f"https://hc.example.com{path}",
        ]
        assert [r.event for r in run.notifications] == ["start", state]


def test_a_secret_url_shows_only_its_host_and_redacts_every_form() -> None:
    url = SecretUrl("https://hooks.example.com/services/T0/B1/s3cr3t?sig=a%2Fb")
    assert url.host == "hooks.example.com"
    assert repr(url) == str(url) == "SecretUrl('hooks.example.com/***')"
    text = url.redact(
        "POST https://hooks.example.com/services/T0/B1/s3cr3t?sig=a%2Fb failed: "
        "/services/T0/B1/s3cr3t sig=a%2Fb %2Fservices%2FT0%2FB1%2Fs3cr3t"
    )
    assert "s3cr3t" not in text and "a%2Fb" not in text
    assert url.with_suffix("/start").reveal() == (
        "https://hooks.example.com/services/T0/B1/s3cr3t/start?sig=a%2Fb"
    )
    with pytest.raises(TypeError):
        __import__("pickle").dumps(url)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "notify[0]: the environment variable HOOK is not set or empty"),
        ("", "notify[0]: the environment variable HOOK is not set or empty"),
        ("hooks.example.com/x", "notify[0]: HOOK does not hold an http(s) URL with a host"),
        ("https://u:p@hooks.example.com/x", "must not contain a user or password"),
        ("https://hooks.example.com:99999/x", "notify[0]: HOOK does not hold a URL"),
        ("http://hooks.example.com/x", "must use https://"),
    ],
)
def test_an_unusable_url_is_a_config_error_that_never_shows_it(value, message) -> None:
    environ = {} if value is None else {"HOOK": value}
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        secret_url("HOOK", "notify[0]", environ)
    assert "/x" not in str(caught.value)
    assert secret_url("HOOK", "w", {"HOOK": "http://127.0.0.1:8/x"}).host == "127.0.0.1"


def test_a_ping_body_is_the_summary_cut_to_10_000_bytes() -> None:
    run = a_run("failed")
    for index in range(400):
        name = f"step_{index:03d}_ü"
        run.steps[name] = StepRecord(name, index, 2, state="failed", reason="x" * 40)
    body = ping_body(run)
    assert len(body) <= MAX_PING_BODY and body.endswith(b"\n...")
    body.decode()  # cut on a character boundary
    assert ping_body(a_run()).decode() == "Run 3 of night succeeded in 0ms: 1 succeeded\n"


def test_a_late_slack_message() -> None:
    assert json.loads(slack_payload(a_run("running"), "late")) == {
        "text": "runbook: plan `night`: run 3 is late: still going past its 1m deadline "
        "(1 succeeded)"
    }


ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@given(st.text())
def test_foreign_text_in_slack_is_one_code_span_with_nothing_slack_would_parse(text) -> None:
    shown = slack_literal(text)
    assert "<" not in shown and ">" not in shown and not ENTITY.search(shown)
    if not text:
        assert shown == ""
        return
    inside = shown[1:-1]
    assert shown == f"`{inside}`" and "`" not in inside  # nothing ends the span early
    assert unescape(inside) == text.replace("`", "\u02cb")  # the text itself, shown


@given(plan=st.text(min_size=1), reason=st.text())
def test_a_slack_message_has_no_markup_but_its_own(plan, reason) -> None:
    step = StepRecord("load", 72, 1, state="failed")
    step.reason = reason
    run = RunRecord(plan=plan, run_id=3, max_parallel=4, steps={"load": step})
    run.state = "failed"
    text = json.loads(slack_payload(run, "failed"))["text"]
    assert "<" not in text and ">" not in text and not ENTITY.search(text)
    own = re.sub(r"`[^`]*`", "", text)  # what is left outside the code spans: runbook's
    assert own == "runbook: run 3 of plan  failed: 1 failed\n•  (workflow 72): "


NAMES = st.text(alphabet="sS_ /.é+-", min_size=1, max_size=6)  # slugs that meet often


@given(NAMES, NAMES)
def test_distinct_plans_never_share_a_metrics_file(one, other) -> None:
    assume(one != other)
    assert metrics_path("d", one) != metrics_path("d", other)


@given(st.text(min_size=1, max_size=200))
def test_a_metrics_file_is_one_name_in_the_dir_and_a_safe_name_keeps_its_own(name) -> None:
    path = metrics_path("d", name)
    assert path.parent.name == "d" and path.name.endswith(".prom")
    # room left for prometheus_client's temporary name: the path, a pid and a thread id
    assert len(path.name.encode()) + len(".4194304.140000000000000") <= 255
    if re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        assert path.name == f"runbook_{name}.prom"
    else:
        assert re.fullmatch(r"runbook_[A-Za-z0-9_.-]{1,100}\+[0-9a-f]{12}\.prom", path.name)


def test_a_metrics_file_says_whose_series_it_holds(tmp_path) -> None:
    path = tmp_path / "runbook_x.prom"
    assert plans_in(path) is None
    path.write_bytes(b"\xff\xfe")
    assert plans_in(path) == frozenset()
    path.write_text("not { the text format")
    assert plans_in(path) == frozenset()
    path.write_text('runbook_x{plan="a"} 1\nrunbook_y{plan="b \\"q\\""} 1\nother{plan="c"} 1\n')
    assert plans_in(path) == {"a", 'b "q"'}  # runbook's series only, labels unescaped


def test_a_file_of_several_other_plans_is_left_and_named(tmp_path) -> None:
    told: list[str] = []
    sink = MetricsFile(str(tmp_path), "p", warn=told.append)
    sink.path.write_text('runbook_x{plan="b"} 1\nrunbook_x{plan="p"} 1\nrunbook_x{plan="a"} 1\n')
    sink(RunStarted(a_run("running"), 0))
    sink(RunFinished(a_run(), 1))
    assert told == [
        f"the metrics file {sink.path} belongs to plans 'a', 'b': it is left as it is, and "
        "this run's metrics are not written; the run goes on"
    ]


def test_an_old_file_that_cannot_be_removed_is_a_warning(tmp_path, monkeypatch) -> None:
    told: list[str] = []
    old = tmp_path / "runbook_p_q.prom"
    old.write_text('runbook_x{plan="p q"} 1\n')

    def refuse(self, missing_ok=False):  # root may remove any file: say it cannot
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(old), "unlink", refuse)
    sink = MetricsFile(str(tmp_path), "p q", warn=told.append)
    sink(RunStarted(a_run("running"), 0))
    assert told == [
        f"cannot remove {old}, this plan's metrics file by its old name: Permission denied; "
        "remove it, or its series are exported twice"
    ]
    assert plans_in(sink.path) == {"p q"}  # the new file is written all the same
