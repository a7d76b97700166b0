from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st
from tests.test_fuzz_ingest import send_bodies, check_decode, daemon, _with_known_tenant  # noqa
def ok(b):
    return b.count(b"[") < 300 and b.count(b"{") < 300 and b'"http://[' not in b and b'"https://[' not in b

@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(send_bodies().filter(ok) | st.binary(max_size=400))
def test_x(raw):
    check_decode(raw)

@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(raw=send_bodies().filter(ok) | st.binary(max_size=200), tenant=st.sampled_from(["acme", "a", "nope"]), batch=st.booleans())
def test_d(daemon, raw, tenant, batch):
    raw = _with_known_tenant(raw, tenant)
    path = "/api/v1/webhooks/send"
    if batch:
        path, raw = "/api/v1/webhooks/send-batch", b'{"events":[' + raw + b"," + raw + b"]}"
    code, body = daemon.request("POST", path, raw=raw)
    assert code < 500, (code, body, raw[:300])
