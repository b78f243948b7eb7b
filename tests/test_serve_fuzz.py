"""Random JSON bodies against every POST endpoint: the server answers 2xx/4xx, never 5xx."""

import pytest

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
keys = st.sampled_from(["model", "messages", "prompt", "n", "size", "stream", "seed", "guidance"])
bodies = st.dictionaries(keys, json_values, max_size=5)


@pytest.fixture(scope="module")
def client(tiny_run):
    from unimm.pipeline import load_checkpoint
    from unimm.serve.app import create_app

    model, _ = load_checkpoint(tiny_run)
    return TestClient(create_app(model))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/images/generations"]))
def test_random_bodies_never_5xx(client, body, path):
    r = client.post(path, json=body)
    assert r.status_code < 500, (body, r.text)
