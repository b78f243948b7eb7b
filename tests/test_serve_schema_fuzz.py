"""Schemathesis fuzz of every operation in the server's own OpenAPI document: requests inside
the schema (positive) and just outside it (negative) never get a 5xx, and every /v1/ error
carries the OpenAI error body."""

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tiny_run):
    from unimm.pipeline import load_checkpoint
    from unimm.serve.app import create_app
    from unimm.serve.config import ServeConfig

    model, _ = load_checkpoint(tiny_run)
    # Small limits keep each generated request cheap; they are what the schema states.
    app = create_app(model, config=ServeConfig(max_n=2, max_tokens=8, max_messages=4))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(schema):
    ops = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in ops} >= {"/v1/chat/completions", "/v1/images/generations"}
    return ops


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_5xx(api_schema, mode):
    strategy = st.one_of([op.as_strategy(mode) for op in _operations(api_schema)])

    # pytest's `fixture` and hypothesis' `given` mix badly, so the property is built here.
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case):
        response = case.call()
        assert response.status_code < 500, (case.path, case.body, response.text)
        if response.status_code >= 400 and case.path.startswith("/v1/"):
            assert response.json()["error"]["message"], (case.path, response.text)

    check()
