"""The webhooks API: registration with a secret, region isolation (401/403/404), the URL guard,
changes, rotation, deletion and pagination."""

import base64

import pytest

from services.notify.notifications import SUBSCRIBABLE
from tests.conftest import access_database, idempotency_records
from tests.notify.conftest import fast_settings, make_api


def test_register_shows_the_secret_once_and_reads_back(api, receiver):
    e = api.register(receiver.url, description="Liangshan office", event_types=["finding.critical_recorded"])
    assert e["secret"].startswith("whsec_") and len(base64.b64decode(e["secret"][6:])) >= 24
    assert (e["region_code"], e["enabled"], e["event_types"]) == ("513400", True, ["finding.critical_recorded"])
    got = api.call("GET", f"/{e['id']}")
    assert "secret" not in got and got["url"] == receiver.url and got["description"] == "Liangshan office"
    assert api.register(receiver.url)["event_types"] == list(SUBSCRIBABLE)  # default: every type


def test_the_type_list_says_which_types_an_endpoint_may_subscribe_to(api, receiver):
    listed = api.client.get("/v1/webhooks/event-types", headers=api.headers).json()
    assert {t["type"]: t["subscribable"] for t in listed} == {**dict.fromkeys(SUBSCRIBABLE, True),
                                                              "webhook.ping": False}
    for t in listed:  # each answer agrees with what registering it does
        r = api.client.post("/v1/webhooks/endpoints", json={"url": receiver.url, "event_types": [t["type"]]},
                            headers=api.headers)
        assert r.status_code == (201 if t["subscribable"] else 422), (t, r.text)


def test_a_replayed_registration_or_rotation_shows_no_secret_and_saves_none(notify_settings, notify_db, tmp_path):
    """With an Idempotency-Key: no second endpoint or rotation; the replay names the secret it
    leaves out, and no secret is in the idempotency table (the access database, on each backend)."""
    with access_database(notify_db.backend, tmp_path / "own") as keys:
        for api in make_api(notify_settings, notify_db, keys):
            register = {**api.headers, "Idempotency-Key": "register-liangshan"}
            first = api.client.post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=register)
            again = api.client.post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=register)
            assert first.status_code == again.status_code == 201 and first.json()["secret"].startswith("whsec_")
            assert again.headers["idempotent-replayed"] == "true" and again.headers["idempotent-redacted"] == "secret"
            assert again.json() == {**first.json(), "secret": None}
            assert [e["id"] for e in api.call("GET", "")["items"]] == [first.json()["id"]]

            rotate = {**api.headers, "Idempotency-Key": "rotate-liangshan"}
            url = f"/v1/webhooks/endpoints/{first.json()['id']}/rotate-secret"
            rotated, replayed = api.client.post(url, headers=rotate), api.client.post(url, headers=rotate)
            assert rotated.status_code == replayed.status_code == 200 and rotated.json()["secret"].startswith("whsec_")
            assert replayed.json() == {**rotated.json(), "secret": None}
            assert replayed.headers["idempotent-redacted"] == "secret"
            assert api.call("GET", f"/{first.json()['id']}")["previous_secret_expires_at"] == \
                rotated.json()["previous_secret_expires_at"]  # rotated once

            rows = idempotency_records(keys.engine)
            assert sorted(r["status"] for r in rows) == [200, 201]
            for secret in (first.json()["secret"], rotated.json()["secret"]):
                for row in rows:
                    assert not any(secret[6:].encode() in (v if isinstance(v, bytes) else str(v).encode())
                                   for v in row.values()), row


def test_keys_see_only_their_region(api, receiver):
    mine = api.register(receiver.url)
    county = api.register(receiver.url, headers=api.key("513431"))  # a county of the same prefecture
    other = api.register(receiver.url, headers=api.key("513300"))  # another prefecture
    ids = lambda headers: {e["id"] for e in api.call("GET", "", headers=headers)["items"]}  # noqa: E731
    assert ids(api.headers) == {mine["id"], county["id"]}
    assert ids(api.key("513300")) == {other["id"]}
    assert ids(api.key("510000")) == {mine["id"], county["id"], other["id"]}  # the province sees all
    assert ids(api.key("513431")) == {county["id"]}
    outsider = api.key("513300")
    for method, path, body in [("GET", "", None), ("PATCH", "", {"description": "x"}), ("DELETE", "", None),
                               ("POST", "/rotate-secret", None), ("POST", "/ping", None),
                               ("GET", "/attempts", None), ("GET", "/messages", None),
                               ("POST", "/messages/msg_x/replay", None),
                               ("POST", "/replay-failed", {"since": "2026-01-01T00:00:00Z"})]:
        api.call(method, f"/{mine['id']}{path}", expect=404, headers=outsider, json=body)
    api.call("GET", f"/{mine['id']}", headers=api.headers)  # untouched


def test_no_key_is_401_and_a_key_without_the_scope_is_403(api):
    r = api.client.get("/v1/webhooks/endpoints")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = api.client.get("/v1/webhooks/endpoints", headers=api.key("513400", scopes=("standings:read",)))
    assert r.status_code == 403


def test_private_urls_are_refused_unless_the_development_setting_allows_them(notify_db, access, tmp_path):
    for api in make_api(fast_settings(tmp_path, notify_allow_private_urls=False), notify_db, access):
        for url in ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.0.0.1/",
                    "http://169.254.169.254/latest", "ftp://93.184.215.14/"]:
            r = api.client.post("/v1/webhooks/endpoints", json={"url": url}, headers=api.headers)
            assert r.status_code == 422, url
            assert r.json()["errors"][0]["field"] == "url" and r.headers["content-type"] == "application/problem+json"
        e = api.register("https://93.184.215.14/hook")
        r = api.client.patch(f"/v1/webhooks/endpoints/{e['id']}", json={"url": "http://127.0.0.1/"},
                             headers=api.headers)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "url"


@pytest.mark.parametrize("body, field", [({"url": "http://127.0.0.1/", "event_types": ["nope"]}, "event_types.0"),
                                         ({"url": "http://127.0.0.1/", "event_types": []}, "event_types"),
                                         ({}, "url"), ({"url": "http://127.0.0.1/", "extra": 1}, "extra")])
def test_bad_bodies_name_the_field(api, body, field):
    r = api.client.post("/v1/webhooks/endpoints", json=body, headers=api.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == field


def test_change_rotate_disable_and_delete(api, receiver):
    e = api.register(receiver.url)
    changed = api.call("PATCH", f"/{e['id']}", json={"event_types": ["standing.changed"], "description": "d"})
    assert (changed["event_types"], changed["description"]) == (["standing.changed"], "d")
    rotated = api.call("POST", f"/{e['id']}/rotate-secret")
    assert rotated["secret"] != e["secret"] and rotated["secret"].startswith("whsec_")
    assert api.call("GET", f"/{e['id']}")["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
    off = api.call("PATCH", f"/{e['id']}", json={"enabled": False})
    assert not off["enabled"] and off["disabled_reason"].startswith("disabled by API key")
    api.call("POST", f"/{e['id']}/ping", expect=409)
    on = api.call("PATCH", f"/{e['id']}", json={"enabled": True})
    assert on["enabled"] and on["disabled_at"] is None
    api.call("DELETE", f"/{e['id']}", expect=204)
    api.call("GET", f"/{e['id']}", expect=404)


def test_a_null_in_a_change_is_refused_at_its_field_and_changes_nothing(api, receiver):
    """A field left out stays as it is; a field sent as null is not "unchanged" but a mistake."""
    e = api.register(receiver.url, description="kept")
    for field in ("url", "description", "event_types", "enabled"):
        valid = {"enabled": False} if field == "description" else {"description": "not applied"}
        problem = api.call("PATCH", f"/{e['id']}", json={**valid, field: None}, expect=422)
        assert [err["field"] for err in problem["errors"]] == [field], problem
    assert {k: v for k, v in api.call("GET", f"/{e['id']}").items() if k != "updated_at"} == \
        {k: v for k, v in e.items() if k not in ("secret", "updated_at")}


def test_lists_are_paginated(api, receiver):
    made = {api.register(receiver.url)["id"] for _ in range(5)}
    seen, cursor = [], None
    while True:
        page = api.call("GET", "", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(made)
    api.call("GET", "", expect=422, params={"cursor": "nope"})
