"""Deliveries over real HTTP to a loopback receiver that checks every signature with the
`standardwebhooks` package: retries on the schedule, 410, Retry-After, timeouts, redirects,
disabling after a failing period, rotation, replays, and the URL guard at delivery time."""

import time

import pytest

from tests.notify.conftest import Running, fast_settings
from tests.notify.receiver import Reply
from tests.waiting import wait_for


def endpoint(api, receiver, **body) -> dict:
    e = api.register(receiver.url, **body)
    receiver.secrets.append(e["secret"])
    return e


def attempts(api, e) -> list[dict]:
    return list(reversed(api.call("GET", f"/{e['id']}/attempts", params={"limit": 100})["items"]))


def test_a_ping_is_delivered_signed_and_logged(api, receiver, dispatcher):
    e = endpoint(api, receiver)
    queued = api.call("POST", f"/{e['id']}/ping", expect=202)
    got = wait_for(receiver.delivered, what="the ping")[0]
    assert got.webhook_id == queued["message_id"] and got.verified_with == [e["secret"]]
    assert got.json["type"] == "webhook.ping" and got.json["data"]["endpoint_id"] == e["id"]
    assert abs(got.timestamp - time.time()) < 5
    log = wait_for(lambda: attempts(api, e), what="the attempt logged")
    assert [(a["status_code"], a["delivered"], a["error"]) for a in log] == [(200, True, None)]
    assert log[0]["latency_ms"] >= 0 and log[0]["message_id"] == queued["message_id"]


def test_failures_are_retried_on_the_schedule_with_the_same_id_and_fresh_signatures(api, receiver, dispatcher):
    e = endpoint(api, receiver)
    receiver.script.extend([Reply(500), Reply(502)])
    api.call("POST", f"/{e['id']}/ping", expect=202)
    wait_for(receiver.delivered, what="delivery after two failures")
    tries = receiver.received
    assert [r.status for r in tries] == [500, 502, 200] and len({r.webhook_id for r in tries}) == 1
    assert all(r.verified_with == [e["secret"]] for r in tries)
    gaps = [b.at - a.at for a, b in zip(tries, tries[1:])]
    assert 0.25 <= gaps[0] < 0.9 and 0.55 <= gaps[1] < 1.3 and gaps[1] > gaps[0], gaps  # schedule: 0, 0.3, 0.6 s
    # the receiver answers before the dispatcher records the outcome: wait for the record
    messages = wait_for(lambda: (x := api.call("GET", f"/{e['id']}/messages")["items"]) and
                        x[0]["status"] != "pending" and x, what="the outcome recorded")
    assert [(m["status"], m["tries"]) for m in messages] == [("delivered", 3)]
    log = wait_for(lambda: len(x := attempts(api, e)) == 3 and x)
    assert [a["error"] for a in log] == ["HTTP 500", "HTTP 502", None]


def test_a_delivery_fails_after_the_last_attempt_and_can_be_replayed(api, receiver, dispatcher):
    e = endpoint(api, receiver)
    receiver.default = Reply(500)
    m1 = api.call("POST", f"/{e['id']}/ping", expect=202)["message_id"]
    m2 = api.call("POST", f"/{e['id']}/ping", expect=202)["message_id"]
    wait_for(lambda: {m["status"] for m in api.call("GET", f"/{e['id']}/messages")["items"]} == {"failed"},
             what="both failed", timeout=10)
    assert len(receiver.received) == 8  # 4 attempts each
    receiver.default = Reply(200)
    api.call("POST", f"/{e['id']}/messages/{m1}/replay", expect=202)
    wait_for(lambda: [r.webhook_id for r in receiver.delivered()] == [m1], what="m1 replayed")
    r = api.call("POST", f"/{e['id']}/replay-failed", expect=202, json={"since": "2020-01-01T00:00:00Z"})
    assert r["replayed"] == 1
    wait_for(lambda: sorted(r.webhook_id for r in receiver.delivered()) == sorted([m1, m2]), what="m2 replayed")
    later = api.call("POST", f"/{e['id']}/replay-failed", expect=202, json={"since": "2999-01-01T00:00:00Z"})
    for not_iso in (0, "0", "2020-01-01"):  # a Unix time would replay from 1970; a day has no offset
        assert api.call("POST", f"/{e['id']}/replay-failed", expect=422,
                        json={"since": not_iso})["errors"][0]["field"] == "since"
    assert later["replayed"] == 0
    api.call("POST", f"/{e['id']}/messages/msg_unknown/replay", expect=404)


def test_410_disables_the_endpoint(api, receiver, dispatcher):
    e = endpoint(api, receiver)
    receiver.default = Reply(410)
    api.call("POST", f"/{e['id']}/ping", expect=202)
    got = wait_for(lambda: not (x := api.call("GET", f"/{e['id']}"))["enabled"] and x, what="disabled")
    assert "410" in got["disabled_reason"] and got["disabled_at"]
    time.sleep(0.5)
    assert len(receiver.received) == 1  # no retry
    assert api.call("GET", f"/{e['id']}/messages")["items"][0]["status"] == "failed"


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(api, receiver, dispatcher, status):
    e = endpoint(api, receiver)
    receiver.script.append(Reply(status, {"Retry-After": "1"}))
    api.call("POST", f"/{e['id']}/ping", expect=202)
    wait_for(receiver.delivered, what="delivered after Retry-After", timeout=10)
    first, second = receiver.received
    assert second.at - first.at >= 0.95  # the schedule alone would retry after 0.3 s


def test_timeouts_and_redirects_are_failures(api, receiver, dispatcher):
    e = endpoint(api, receiver)
    receiver.script.extend([Reply(200, delay_s=1.5), Reply(302, {"Location": "http://127.0.0.1:9/elsewhere"})])
    api.call("POST", f"/{e['id']}/ping", expect=202)
    log = wait_for(lambda: len(x := attempts(api, e)) == 3 and x, what="three attempts", timeout=10)
    assert log[0]["error"].startswith("timeout") and log[0]["status_code"] is None
    assert log[1]["status_code"] == 302 and "redirects are not followed" in log[1]["error"]
    assert log[2]["delivered"]


def test_an_endpoint_failing_for_the_period_is_disabled(notify_db, api, receiver, tmp_path):
    running = Running(fast_settings(tmp_path, notify_disable_after_s=0.5,
                                    notify_retry_schedule_s=[0] + [0.2] * 20), notify_db)
    try:
        e = endpoint(api, receiver)
        receiver.default = Reply(500)
        api.call("POST", f"/{e['id']}/ping", expect=202)
        got = wait_for(lambda: not (x := api.call("GET", f"/{e['id']}"))["enabled"] and x, what="disabled")
        assert got["failing_since"] and "without a success" in got["disabled_reason"]
        assert 3 <= len(receiver.received) <= 5
    finally:
        running.close()


def test_during_a_rotation_both_signatures_are_sent(api, receiver, dispatcher):
    e = endpoint(api, receiver)
    new = api.call("POST", f"/{e['id']}/rotate-secret")["secret"]
    receiver.secrets.append(new)
    api.call("POST", f"/{e['id']}/ping", expect=202)
    got = wait_for(receiver.delivered)[0]
    assert sorted(got.verified_with) == sorted([e["secret"], new])
    assert got.entries_verified == [[new], [e["secret"]]]  # each entry verifies with its own secret


def test_the_rotation_window_ends(notify_db, access, receiver, tmp_path):
    from tests.notify.conftest import make_api

    settings = fast_settings(tmp_path, notify_rotation_window_s=0.3)
    for api in make_api(settings, notify_db, access):
        running = Running(settings, notify_db)
        try:
            e = endpoint(api, receiver)
            new = api.call("POST", f"/{e['id']}/rotate-secret")["secret"]
            receiver.secrets.append(new)
            time.sleep(0.4)
            api.call("POST", f"/{e['id']}/ping", expect=202)
            got = wait_for(receiver.delivered)[0]
            assert got.verified_with == [new] and len(got.signature.split(" ")) == 1
        finally:
            running.close()


def test_the_guard_applies_at_delivery_time(notify_db, api, receiver, tmp_path):
    """Registered while private URLs were allowed; a dispatcher that refuses them never connects."""
    e = endpoint(api, receiver)
    running = Running(fast_settings(tmp_path, notify_allow_private_urls=False), notify_db)
    try:
        api.call("POST", f"/{e['id']}/ping", expect=202)
        log = wait_for(lambda: attempts(api, e), what="a refused attempt")
        assert "refused" in log[0]["error"] and "loopback" in log[0]["error"]
        assert receiver.received == []
    finally:
        running.close()
