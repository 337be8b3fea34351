"""Where webhooks may go, and what their signatures look like: checked with `standardwebhooks`."""

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notify import signing
from services.notify.urls import Refused, check_url


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://localhost:8080/hook", "localhost resolves to"),  # a name resolving to loopback
    ("http://[::1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://192.168.0.10/hook", "private"),
    ("http://172.16.5.5/hook", "private"),
    ("http://169.254.10.10/hook", "link-local"),
    ("http://169.254.169.254/latest/meta-data", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://224.0.0.1/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://240.0.0.1/", "reserved"),
    ("ftp://93.184.215.14/hook", "http and https"),
    ("https://user:pw@93.184.215.14/hook", "credentials"),
    ("https:///nohost", "no host"),
    ("https://no-such-host.invalid/hook", "does not resolve"),
])
def test_private_and_odd_urls_are_refused(url, why):
    with pytest.raises(Refused, match=why):
        check_url(url, allow_private=False)


def test_public_addresses_are_accepted_and_the_development_setting_allows_private_ones():
    assert check_url("https://93.184.215.14/hook", allow_private=False)
    assert check_url("http://127.0.0.1:9999/hook", allow_private=True)
    assert check_url("http://localhost:9999/hook", allow_private=True)
    with pytest.raises(Refused, match="metadata"):  # never, even in development
        check_url("http://169.254.169.254/", allow_private=True)


def test_secrets_and_signatures_follow_standard_webhooks():
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    body = b'{"type":"webhook.ping","timestamp":"2026-05-01T00:00:00.000000Z","data":{}}'
    now = int(time.time())
    headers = signing.headers([secret], "msg_1", now, body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers)["type"] == "webhook.ping"
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    old = signing.new_secret()
    both = signing.headers([secret, old], "msg_1", now, body)
    assert len(both["webhook-signature"].split(" ")) == 2
    for s in (secret, old):
        Webhook(s).verify(body, both)
