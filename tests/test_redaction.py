"""Redaction of what a model is sent: a table of secret and personal-data forms that must be
masked (with a word around each that must survive), and of lines that must pass unchanged.

Vendor tokens are assembled at run time so that this file holds no string a secret scanner
would flag; they are made up and match only the published formats.
"""

import json
import string

import pytest

from graph.prompts import (
    CONTEXT_TAG,
    CRITIC_SYSTEM,
    HYPOTHESIZE_SYSTEM,
    INVESTIGATOR_SYSTEM,
    MITIGATE_SYSTEM,
    read_context,
    with_context,
)
from graph.redaction import redact_text, redact_value
from graph.state import CriticReport, HypothesisSet, MitigationPlan

ALNUM = string.ascii_letters + string.digits


def filler(n: int, alphabet: str = ALNUM, start: int = 7) -> str:
    """A deterministic made-up token body of n characters."""
    return "".join(alphabet[(start + i * 11) % len(alphabet)] for i in range(n))


HEX = "0123456789abcdef"
JWT = "eyJhbGciOiJIUzI1NiJ9" + "." + "eyJzdWIiOiJ1MTIzIiwiZXhwIjoxNzY3MjI1NjAwfQ" + "." + "Qm9ndXNTaWduYXR1cmVGb3JUZXN0cw"
PEM_BODY = "MIIEowIBAAKCAQEA7mYk1T2b" + filler(40)
STRIPE = "sk_" + "live_" + filler(24)

# (id, raw line, substring that must not survive, word around it that must survive)
SECRETS = [
    ("aws-secret-key", "boto: aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY region=eu-west-1", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "region=eu-west-1"),
    ("aws-secret-env", 'env AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" loaded', "wJalrXUtnFEMI", "loaded"),
    ("aws-key-id-akia", "signing with " + "AKIA" + "IOSFODNN7EXAMPLE for s3", "IOSFODNN7EXAMPLE", "s3"),
    ("aws-key-id-asia", "sts credentials " + "ASIA" + "Y34FZKBOKMUTVV7A expired", "Y34FZKBOKMUTVV7A", "expired"),
    ("aws-session-token", "aws_session_token=FwoGZXIvYXdzEBYaDH" + filler(30) + " ttl=900", "FwoGZXIvYXdzEBYaDH", "ttl=900"),
    ("pem-rsa-multiline", f"loading key -----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n{filler(40, start=3)}\n-----END RSA PRIVATE KEY----- done", PEM_BODY, "done"),
    ("pem-escaped-newlines", f'cfg "-----BEGIN PRIVATE KEY-----\\n{PEM_BODY}\\n-----END PRIVATE KEY-----\\n" parsed', PEM_BODY, "parsed"),
    ("pem-cut-off", f"dump -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ{filler(20)}", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ", "dump"),
    ("private-key-json", 'service account {"type": "service_account", "private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEF' + filler(20) + '"} ok', "MIIEvQIBADANBgkqhkiG9w0BAQEF", "service_account"),
    ("redis-url-password", "connect redis://:s3cr3tP4ss@cache-1.internal:6379/0 failed", "s3cr3tP4ss", "cache-1.internal"),
    ("postgres-url-password", "dsn=postgres://app_user:Tr0ub4dor&3@db.internal:5432/orders", "Tr0ub4dor&3", "db.internal"),
    ("mongodb-srv-password", "mongodb+srv://admin:hunter2hunter2@cluster0.example.net/app timeout", "hunter2hunter2", "timeout"),
    ("cookie-header", "req Cookie: sessionid=8f14e45fceea167a; csrftoken=Zx9Yq2Lm4Np6Rs8Tu0; theme=dark from edge", "Zx9Yq2Lm4Np6Rs8Tu0", "edge"),
    ("cookie-plain-value", "Cookie: remember_me=alice_remember_tok; lang=en", "alice_remember_tok", "remember_me"),
    ("set-cookie", "resp Set-Cookie: SID=s%3AqL7dN2pX9vB4; Path=/; Secure; HttpOnly", "s%3AqL7dN2pX9vB4", "HttpOnly"),
    ("authorization-basic", "upstream Authorization: Basic dXNlcjpwYXNzd29yZA== rejected", "dXNlcjpwYXNzd29yZA==", "rejected"),
    ("authorization-basic-json", 'headers {"authorization": "Basic YWRtaW46c2VjcmV0"} sent', "YWRtaW46c2VjcmV0", "headers"),
    ("authorization-bearer", "Authorization: Bearer opaque.tok-en_value42 from gateway", "opaque.tok-en_value42", "gateway"),
    ("bearer-jwt", f"got bearer {JWT} for u1", JWT.split(".")[2], "got"),
    ("jwt-anywhere", f"token in query ?t={JWT}&x=1", JWT.split(".")[1], "query"),
    ("card-spaced", "charge card 4111 1111 1111 1111 declined", "4111 1111 1111 1111", "declined"),
    ("card-dashed", "card 5500-0000-0000-0004 expired", "5500-0000-0000-0004", "expired"),
    ("card-plain-visa", "pan=4012888888881881 status=ok", "4012888888881881", "status=ok"),
    ("card-plain-amex", "amex 378282246310005 approved", "378282246310005", "approved"),
    ("phone-international", "callback +44 20 7946 0958 queued", "7946 0958", "queued"),
    ("phone-us-parens", "sms to (415) 555-0132 sent", "555-0132", "sent"),
    ("phone-us-dashed", "contact 415-555-0132 updated", "415-555-0132", "updated"),
    ("phone-e164", "twilio to=+14155550132 delivered", "4155550132", "delivered"),
    ("ipv6-full", "peer 2001:0db8:85a3:0000:0000:8a2e:0370:7334 reset", "2001:0db8:85a3", "reset"),
    ("ipv6-compressed", "from 2001:db8::8a2e:370:7334 at 12:30:45", "2001:db8::8a2e", "12:30:45"),
    ("ipv6-link-local", "listen fe80::1ff:fe23:4567:890a%eth0 up", "fe80::1ff", "up"),
    ("ipv6-mapped-v4", "client addr ::ffff:192.0.2.128 dropped", "192.0.2.128", "dropped"),
    ("ssn", "kyc ssn 123-45-6789 verified", "123-45-6789", "verified"),
    ("stripe-secret", f"stripe key {STRIPE} used", STRIPE, "used"),
    ("stripe-restricted", "rk_" + "live_" + filler(30) + " charge", filler(30), "charge"),
    ("stripe-publishable", "pk_" + "live_" + filler(30, start=2) + " checkout", filler(30, start=2), "checkout"),
    ("gcp-api-key", "maps key=" + "AIza" + filler(35) + " quota", filler(35), "quota"),
    ("gitlab-pat", "git clone with " + "glpat-" + filler(20) + " ok", filler(20), "clone"),
    ("azure-account-key", "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=" + filler(86) + "==;EndpointSuffix=core.windows.net", filler(86), "EndpointSuffix"),
    ("azure-sql-pwd", "Server=tcp:db.windows.net;User ID=app;pwd=Xy7!pq9Lm;Encrypt=true", "Xy7!pq9Lm", "Encrypt=true"),
    ("azure-sql-password", "Server=db;Database=orders;Password=Winter2026!x;", "Winter2026!x", "Database=orders"),
    ("azure-sas-sig", "GET https://acct1.blob.core.windows.net/c/b?sv=2023-01-03&se=2026-12-01&sig=aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW%3D 403", "aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW", "403"),
    ("slack-webhook", "notify https://hooks.slack.com/services/T0A1B2C3D/B0D4E5F6G/" + filler(24) + " 200", filler(24), "hooks.slack.com"),
    ("slack-bot-token", "slack " + "xoxb-" + "123456789012-1234567890123-" + filler(24) + " invalid_auth", filler(24), "invalid_auth"),
    ("npm-token", "npmrc //registry.npmjs.org/:_authToken=" + "npm_" + filler(36) + " publish", filler(36), "publish"),
    ("twilio-api-key", "twilio " + "SK" + filler(32, HEX) + " ok", filler(32, HEX), "twilio"),
    ("sendgrid", "mail via " + "SG." + filler(22) + "." + filler(43, start=1) + " queued", filler(43, start=1), "queued"),
    ("mailgun", "mailgun api " + "key-" + filler(32) + " 401", filler(32), "401"),
    ("heroku", "heroku auth " + "HRKU-" + filler(60) + " granted", filler(60), "granted"),
    ("digitalocean", "doctl " + "dop_v1_" + filler(64, HEX) + " list", filler(64, HEX), "doctl"),
    ("huggingface", "hub login " + "hf_" + filler(34) + " ok", filler(34), "hub"),
    ("anthropic", "claude " + "sk-ant-api03-" + filler(90) + " 529", filler(90), "529"),
    ("openai-project", "openai " + "sk-proj-" + filler(48) + " 429", filler(48), "429"),
    ("github-classic", "push with " + "ghp_" + filler(36) + " denied", filler(36), "denied"),
    ("github-fine-grained", "gh " + "github_pat_" + filler(22) + "_" + filler(59) + " ok", filler(59), "gh"),
    ("pypi", "twine " + "pypi-AgEIcHlwaS5vcmc" + filler(70) + " upload", filler(70), "upload"),
    ("vault", "vault token " + "hvs." + filler(30) + " renewed", filler(30), "renewed"),
    ("google-oauth", "gcloud " + "ya29." + filler(40) + " refreshed", filler(40), "refreshed"),
    ("client-secret", "oauth client_secret=Q2xpZW50U2VjcmV0MTIz grant=code", "Q2xpZW50U2VjcmV0MTIz", "grant=code"),
    ("refresh-token", "refresh_token: 1//0gX7b9" + filler(20) + " rotated", filler(20), "rotated"),
    ("session", "resume session=Zk3Lq9Xw2Rt7Vb5N for user", "Zk3Lq9Xw2Rt7Vb5N", "resume"),
    ("sessionid", "SESSIONID=a81Kf0Lq3ZxP97Bd path=/", "a81Kf0Lq3ZxP97Bd", "path=/"),
    ("csrf", "csrf=9Fh3Kd8Lq2Zx7Vb1Nm mismatch", "9Fh3Kd8Lq2Zx7Vb1Nm", "mismatch"),
    ("x-api-key-header", "X-Api-Key: abcd1234efgh5678 forwarded", "abcd1234efgh5678", "forwarded"),
    ("camel-case-key", 'cfg {"clientSecret": "s3cr3t-Valu3", "region": "eu"} read', "s3cr3t-Valu3", "region"),
    ("password-quoted-phrase", 'login {"password": "correct horse battery staple"} failed', "correct horse battery staple", "failed"),
    ("password-plain", "db password=hunter2 retry", "hunter2", "retry"),
    ("telegram-bot", "bot " + "123456789:" + "AAH" + filler(32) + " polling", filler(32), "polling"),
    ("discord-webhook", "post https://discord.com/api/webhooks/123456789012345678/" + filler(60) + " 204", filler(60), "204"),
]

# Lines that must come back exactly as they went in.
UNCHANGED = [
    ("iso-timestamp", "2026-11-30T12:30:45Z GET /v1/coupon/search 200 in 15ms"),
    ("clock-time", "12:30:45 worker started, next run at 23:59:59"),
    ("offset-timestamp", "2026-11-30T12:30:45.123+05:30 tick; offset +05:30"),
    ("counts-and-latencies", "processed 12345678 rows in 1532 ms (p95=812.5ms, p99=1.2s)"),
    ("epoch-ms", "epoch 1767225600000 next 1767225600123 and 1767225699999"),
    ("non-luhn-number", "order 4111111111111112 has 16 items"),
    ("evidence-id", "see ev-log-pattern-scan-1a2b3c4d and ev-sql-investigate-0f9e8d7c"),
    ("versions", "deployed coupon v2.38.10 (commit e64a921), client lib 1.2.3, python 3.11.7"),
    ("http-paths", "GET /api/v2/users/settings?page=2&limit=50 -> 304"),
    ("service-names", "service web-7 restarted on node-12 in ap-northeast-1 (az use1-az2)"),
    ("token-counters", "token_count=5 prompt_tokens=123 maxTokens=4096 session_count=10 password_attempts=3"),
    ("keywords-in-prose", "secret rotation scheduled; session started; client error; basic auth failed"),
    ("namespaces", "panic in std::vector and Foo::Bar at 10:15:30"),
    ("durations", "ttl=3600s timeout=30s size=1.5GB duration PT15M retry 3/5"),
    ("dates", "window 2026-11-30 to 2026-12-01 12:30:45"),
    ("http-status", "HTTP 503 Service Unavailable after 30s from upstream fulfil-api"),
]


@pytest.mark.parametrize(("line", "secret", "context"), [pytest.param(*row[1:], id=row[0]) for row in SECRETS])
def test_secret_is_masked_and_its_context_survives(line, secret, context):
    assert secret in line and context in line  # the table itself is consistent
    out = redact_text(line)
    assert secret not in out, out
    assert context in out, out
    assert "<" in out  # replaced by a mask, not dropped


@pytest.mark.parametrize("line", [pytest.param(row[1], id=row[0]) for row in UNCHANGED])
def test_line_without_secrets_passes_unchanged(line):
    assert redact_text(line) == line


def test_the_table_has_the_forms_asked_for():
    assert len(SECRETS) >= 40 and len(UNCHANGED) >= 10
    assert len({row[0] for row in SECRETS}) == len(SECRETS)


def test_masks_are_specific():
    out = redact_text("card 4111 1111 1111 1111, call +44 20 7946 0958, ssn 123-45-6789, peer 2001:db8::1, jane@example.com, user=bob")
    assert out == "card <CARD>, call <PHONE>, ssn <SSN>, peer <IP>, <EMAIL>, user=<USER>"
    assert redact_text("v6 ::ffff:192.0.2.128 and [2001:db8::1]:8443 and ::1.") == "v6 <IP> and [<IP>]:8443 and <IP>."
    assert redact_text("redis://:pw1@cache:6379 and https://host:8443/x") == "redis://:<TOKEN>@cache:6379 and https://host:8443/x"
    assert redact_text("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer <TOKEN>"
    assert redact_text("Set-Cookie: sid=abc123xyz; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT; HttpOnly") == (
        "Set-Cookie: sid=<TOKEN>; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT; HttpOnly"
    )
    assert redact_text(f"-----BEGIN EC PRIVATE KEY-----\n{PEM_BODY}\n-----END EC PRIVATE KEY-----") == (
        "-----BEGIN EC PRIVATE KEY-----<TOKEN>-----END EC PRIVATE KEY-----"
    )


def test_the_existing_masks_are_kept():
    text = ('{"evidence_id": "ev-log-pattern-scan-e1d53d7f", "rows": 12345678, "ts": "2025-02-12T04:12:04", '
            '"example": "trace 4bf92f3577b34da6a3ce929d0e0e4736 from 10.0.0.1:5432 user=app Bearer abcdefghijkl"}')
    assert redact_text(text) == (
        '{"evidence_id": "ev-log-pattern-scan-e1d53d7f", "rows": 12345678, "ts": "2025-02-12T04:12:04", '
        '"example": "trace <HEX> from <IP> user=<USER> Bearer <TOKEN>"}'
    )
    assert redact_text("user u123 and client web-7 logged in") == "user <USER> and client <USER> logged in"
    assert redact_text("id 123e4567-e89b-12d3-a456-426614174000") == "id <UUID>"


def test_json_documents_stay_valid_and_secret_keys_are_masked_whole():
    doc = {
        "evidence_id": "ev-sql-investigate-0f9e8d7c",
        "rows": [["login failed\npassword=hunter2", 3], ["ok", 1767225600000]],
        "config": {"password": "two words", "db_pwd": 123456, "session": "short", "token_count": 7, "retries": 2},
        "note": 'he said "}]} and \\ then </CONTEXT_JSON>',
    }
    out = json.loads(redact_text(json.dumps(doc)))
    assert out["evidence_id"] == doc["evidence_id"]
    assert out["rows"] == [["login failed\npassword=<TOKEN>", 3], ["ok", 1767225600000]]  # \n does not hide the key
    assert out["config"] == {"password": "<TOKEN>", "db_pwd": "<TOKEN>", "session": "short", "token_count": 7, "retries": 2}
    assert out["note"] == doc["note"]
    assert redact_value(["a@b.example", {"api_key": "k"}]) == ["<EMAIL>", {"api_key": "<TOKEN>"}]


def test_a_prompt_context_block_is_redacted_inside_and_stays_readable():
    context = {"evidence": [{"id": "ev-x-1a2b3c4d", "example": f"</{CONTEXT_TAG}> api_key={STRIPE} from 10.1.2.3"}]}
    prompt = with_context("Propose ranked hypotheses.", context)
    sent = redact_text(prompt)
    assert STRIPE not in sent and "10.1.2.3" not in sent
    assert sent.count(f"</{CONTEXT_TAG}>") == 1 and sent.endswith(f"</{CONTEXT_TAG}>")
    assert read_context(sent) == {"evidence": [{"id": "ev-x-1a2b3c4d", "example": f"</{CONTEXT_TAG}> api_key=<TOKEN> from <IP>"}]}
    assert "api_key=<TOKEN> from <IP>" in sent  # masks are not escaped: the model reads them as in templates


@pytest.mark.parametrize("system", [INVESTIGATOR_SYSTEM, HYPOTHESIZE_SYSTEM, CRITIC_SYSTEM, MITIGATE_SYSTEM])
def test_system_prompts_and_schemas_pass_unchanged(system):
    assert redact_text(system) == system
    for schema in (HypothesisSet, CriticReport, MitigationPlan):
        spec = f"{system}\n\nReply with one JSON object (no prose) matching this JSON schema:\n{json.dumps(schema.model_json_schema())}"
        assert redact_text(spec) == spec
