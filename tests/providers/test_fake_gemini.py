"""The fake Gemini server, driven by the REAL google-genai SDK over loopback only.

These tests also pin down what google-genai 3.6.1 (httpx2 backend) raises or
yields for each failure, which the provider's retry logic relies on:

- 429: errors.ClientError, .code == 429, .status == "RESOURCE_EXHAUSTED";
  e.details is the whole JSON body ({"error": {..., "details": [...]}}): the
  RetryInfo is the entry of e.details["error"]["details"] whose "@type" ends in
  "google.rpc.RetryInfo", its "retryDelay" is a string like "1.5s".
  e.response is the httpx2.Response: e.response.headers.get("retry-after").
  The SDK itself never reads either (its retry uses only exponential backoff).
- 5xx: errors.ServerError with .code / .status ("INTERNAL", "UNAVAILABLE").
- HttpOptions(timeout=ms) exceeded: httpx2.ReadTimeout (an httpx2.TimeoutException),
  NOT wrapped in a genai error; same for streams.
- cut stream (chunked body closed without its terminator): the chunks already
  received are yielded, then httpx2.RemoteProtocolError is raised from the
  iterator. A close-delimited stream cut looks like a normal end: the iterator
  just stops, and no chunk has a finish_reason or usage.
- malformed JSON: generate_content raises json.JSONDecodeError (plain, from
  models.py); a stream raises errors.UnknownApiResponseError. Both are ValueError.
- empty candidate: no exception; response.text is None, function_calls is None.
- safety block: no exception; candidates[0].finish_reason == FinishReason.SAFETY,
  text None; a blocked prompt: candidates None, prompt_feedback.block_reason SAFETY.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request

import httpx2
import pytest
from google import genai
from google.genai import errors, types

from tests.fakes.fake_gemini import (
    BAD_KEY_MESSAGE, RETRY_INFO_TYPE, Call, Calls, FakeGemini, Fault, Json, Raw,
    RecordedRequest, Text, Usage,
)

MODEL = "gemini-2.5-flash"
KEY = "test-key"


@pytest.fixture(scope="module")
def _client(_server):
    # Building a genai.Client costs ~0.1 s (SSL context), so one is shared per module.
    c = make_client(_server)
    yield c
    c.close()


def make_client(srv: FakeGemini, key: str = KEY, **http) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=srv.base_url, **http))


@pytest.fixture
def client(srv, _client):
    return _client


def retry_delay_seconds(e: errors.APIError) -> float | None:
    """How a caller reads Google's retry hint from the SDK's exception."""
    err = e.details.get("error", {}) if isinstance(e.details, dict) else {}
    for d in err.get("details") or []:
        if d.get("@type", "").endswith("google.rpc.RetryInfo") and "retryDelay" in d:
            return float(d["retryDelay"].rstrip("s"))
    header = e.response.headers.get("retry-after") if e.response is not None else None
    return float(header) if header else None


# ----------------------------------------------------------------- happy paths

def test_generate_text_maps_every_usage_field(srv, client):
    srv.enqueue(Text("hello", usage=Usage(prompt=10, candidates=5, cached=2, thoughts=1, tool_use=3)))
    r = client.models.generate_content(
        model=MODEL, contents="hi there",
        config=types.GenerateContentConfig(system_instruction="be terse", temperature=0.2))
    assert r.text == "hello"
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.cached_content_token_count,
            u.thoughts_token_count, u.tool_use_prompt_token_count, u.total_token_count) == (10, 5, 2, 1, 3, 19)
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    (req,) = srv.requests
    assert isinstance(req, RecordedRequest)
    assert (req.method, req.rpc, req.model, req.api_version) == ("POST", "generateContent", MODEL, "v1")
    assert req.body["contents"] == [{"parts": [{"text": "hi there"}], "role": "user"}]
    assert req.body["systemInstruction"]["parts"] == [{"text": "be terse"}]
    assert req.body["generationConfig"] == {"temperature": 0.2}
    assert req.prompt_text == "be terse\nhi there"
    assert srv.usage_sent() == Usage(10, 5, 2, 1, 3)


def test_zero_optional_usage_fields_are_omitted_like_google(srv, client):
    srv.enqueue(Text("x", usage=Usage(prompt=4, candidates=1)))
    u = client.models.generate_content(model=MODEL, contents="hi").usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (4, 1, 5)
    assert u.cached_content_token_count is None and u.thoughts_token_count is None


def test_default_usage_is_estimated_from_text(srv, client):
    srv.enqueue(Text("twelve chars"))
    u = client.models.generate_content(model=MODEL, contents="0123456789").usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count) == (3, 3)   # ceil(len/4)
    assert srv.usage_sent().total == u.total_token_count == 6


def test_stream_yields_chunks_in_order_with_usage_on_last_only(srv, client):
    srv.enqueue(Text("one two three!", chunks=3, usage=Usage(prompt=7, candidates=4, thoughts=2)))
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="count"))
    assert [c.text for c in chunks] == ["one t", "wo th", "ree!"]
    assert "".join(c.text for c in chunks) == "one two three!"
    assert [c.usage_metadata for c in chunks[:-1]] == [None, None]
    assert [c.candidates[0].finish_reason for c in chunks] == [None, None, types.FinishReason.STOP]
    u = chunks[-1].usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.thoughts_token_count, u.total_token_count) == (7, 4, 2, 13)
    (req,) = srv.requests
    assert req.rpc == "streamGenerateContent" and req.query == {"alt": "sse"}
    assert srv.replies[-1].chunks == 3 and srv.replies[-1].completed
    assert srv.usage_sent() == Usage(prompt=7, candidates=4, thoughts=2)


def test_stream_chunks_arrive_incrementally(srv, client):
    srv.enqueue(Text("abcd", chunks=2, chunk_delay=0.15))
    stamps = [(c.text, time.monotonic()) for c in client.models.generate_content_stream(model=MODEL, contents="x")]
    assert [t for t, _ in stamps] == ["ab", "cd"]
    assert stamps[1][1] - stamps[0][1] >= 0.1


def test_handler_exception_becomes_500_and_is_kept(srv, client):
    srv.script(lambda req: 1 / 0)
    with pytest.raises(errors.ServerError) as ei:
        client.models.generate_content(model=MODEL, contents="x")
    assert "ZeroDivisionError" in ei.value.message
    assert [type(e) for e in srv.handler_errors] == [ZeroDivisionError]
    srv.handler_errors.clear()


@pytest.mark.parametrize("api_version", [None, "v1", "v1beta", "v1alpha"])
def test_api_versions_and_key_header(srv, api_version):
    c = make_client(srv, api_version=api_version) if api_version else make_client(srv)
    assert c.models.generate_content(model="models/" + MODEL, contents="ping").text == "echo: ping"
    (req,) = srv.requests
    assert req.path == f"/{api_version or 'v1'}/models/{MODEL}:generateContent"
    assert req.headers["x-goog-api-key"] == KEY
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"].startswith("google-genai-sdk/")


def test_env_base_url(srv, monkeypatch):
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", srv.base_url)
    c = genai.Client(api_key=KEY)
    assert c.models.generate_content(model=MODEL, contents="via env").text == "echo: via env"
    assert srv.requests[0].headers["host"] == f"127.0.0.1:{srv.port}"


def test_wrong_key_is_client_error_400(srv):
    c = make_client(srv, key="nope")
    with pytest.raises(errors.ClientError) as ei:
        c.models.generate_content(model=MODEL, contents="hi")
    e = ei.value
    assert (e.code, e.status, e.message) == (400, "INVALID_ARGUMENT", BAD_KEY_MESSAGE)
    assert e.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert srv.requests[0].api_key == "nope"
    assert srv.pending() == 0 and srv.usage_sent() == Usage()


def test_script_handler_queue_first_then_handler_then_default(srv, client):
    seen = []

    def handler(req):
        seen.append(req.last_user_text)
        return Text(f"handled {req.last_user_text}") if req.last_user_text != "pass" else None

    srv.script(handler)
    srv.enqueue(Text("queued"))
    got = [client.models.generate_content(model=MODEL, contents=t).text for t in ("a", "b", "pass")]
    assert got == ["queued", "handled b", "echo: pass"]
    assert seen == ["b", "pass"]


def test_json_reply(srv, client):
    srv.enqueue(Json({"tracks": [{"id": 1, "title": "x"}]}, usage=Usage(prompt=3, candidates=9)))
    r = client.models.generate_content(
        model=MODEL, contents="plan",
        config=types.GenerateContentConfig(response_mime_type="application/json"))
    assert json.loads(r.text) == {"tracks": [{"id": 1, "title": "x"}]}
    assert srv.requests[0].body["generationConfig"] == {"responseMimeType": "application/json"}


# ----------------------------------------------------------------- function calling

def test_function_calling_both_schema_styles(srv, client):
    tools = [types.Tool(function_declarations=[
        types.FunctionDeclaration(
            name="write_file", description="write a file",
            parameters_json_schema={"type": "object", "properties": {
                "path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path"]}),
        types.FunctionDeclaration(
            name="read_file", description="read a file",
            parameters=types.Schema(type=types.Type.OBJECT, properties={
                "path": types.Schema(type=types.Type.STRING),
                "limit": types.Schema(type=types.Type.INTEGER)}, required=["path"])),
    ])]
    srv.enqueue(Call("write_file", {"path": "a.py", "content": "x"}, usage=Usage(prompt=20, candidates=8)))
    r = client.models.generate_content(model=MODEL, contents="write it",
                                       config=types.GenerateContentConfig(tools=tools))
    assert [(fc.name, fc.args) for fc in r.function_calls] == [("write_file", {"path": "a.py", "content": "x"})]
    assert r.text is None
    req = srv.requests[0]
    assert req.tool_names == ["write_file", "read_file"]
    decl_js, decl_openapi = req.function_declarations
    # the SDK sends the JSON-schema spelling in snake_case, the Schema one as OpenAPI uppercase
    assert decl_js["parameters_json_schema"]["properties"]["path"] == {"type": "string"}
    assert decl_openapi["parameters"]["type"] == "OBJECT"
    assert decl_openapi["parameters"]["properties"]["limit"] == {"type": "INTEGER"}


def test_several_calls_with_text_and_stream(srv, client):
    srv.enqueue(Calls([("read_file", {"path": "a"}), ("read_file", {"path": "b"})], text="reading"))
    r = client.models.generate_content(model=MODEL, contents="go")
    assert [fc.args["path"] for fc in r.function_calls] == ["a", "b"]
    assert r.text == "reading"
    srv.enqueue(Call("list_dir", {"path": "."}))
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="go"))
    assert chunks[-1].function_calls[0].name == "list_dir"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP


def test_validation_rejects_mixed_case_schema_types(srv):
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
            "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "OBJECT"}}]}]}
    status, resp = _raw_post(srv, f"/v1beta/models/{MODEL}:generateContent", body)
    assert status == 400 and resp["error"]["status"] == "INVALID_ARGUMENT"
    body["tools"][0]["functionDeclarations"][0] = {"name": "f", "parametersJsonSchema": {"type": "object"}}
    assert _raw_post(srv, f"/v1beta/models/{MODEL}:generateContent", body)[0] == 200


# ----------------------------------------------------------------- faults

@pytest.mark.parametrize("via", ["retry_info", "retry_after", "both"])
def test_rate_limit_429_exposes_retry_delay(srv, client, via):
    srv.enqueue(Fault.rate_limit(retry_delay_s=1.5, via=via))
    with pytest.raises(errors.ClientError) as ei:
        client.models.generate_content(model=MODEL, contents="hi")
    e = ei.value
    assert (e.code, e.status) == (429, "RESOURCE_EXHAUSTED")
    assert isinstance(e.response, httpx2.Response)
    infos = [d for d in e.details["error"].get("details", []) if d["@type"] == RETRY_INFO_TYPE]
    header = e.response.headers.get("retry-after")
    if via in ("retry_info", "both"):
        assert infos == [{"@type": RETRY_INFO_TYPE, "retryDelay": "1.5s"}]
        assert retry_delay_seconds(e) == 1.5
    else:
        assert infos == []
    if via in ("retry_after", "both"):
        assert header == "2"                          # integer seconds, rounded up
    else:
        assert header is None
    if via == "retry_after":
        assert retry_delay_seconds(e) == 2.0
    assert len(srv.requests) == 1                     # the default client does not retry


def test_rate_limit_in_stream(srv, client):
    srv.enqueue(Fault.rate_limit(retry_delay_s=3))
    with pytest.raises(errors.ClientError) as ei:
        list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert ei.value.code == 429 and retry_delay_seconds(ei.value) == 3.0


def test_sdk_retry_options_retry_429_without_honouring_retry_delay(srv):
    c = make_client(srv, retry_options=types.HttpRetryOptions(
        attempts=3, initial_delay=0.01, max_delay=0.02, jitter=0))
    srv.enqueue(Fault.rate_limit(retry_delay_s=30), Fault.server_error(503), Text("finally"))
    t0 = time.monotonic()
    assert c.models.generate_content(model=MODEL, contents="hi").text == "finally"
    assert time.monotonic() - t0 < 1.0               # the 30 s RetryInfo was ignored
    assert [r.status for r in srv.replies] == [429, 503, 200]


@pytest.mark.parametrize("status,name", [(500, "INTERNAL"), (503, "UNAVAILABLE")])
def test_server_errors(srv, client, status, name):
    srv.enqueue(Fault.server_error(status))
    with pytest.raises(errors.ServerError) as ei:
        client.models.generate_content(model=MODEL, contents="hi")
    assert (ei.value.code, ei.value.status) == (status, name)
    assert len(srv.requests) == 1


@pytest.mark.parametrize("status,name", [(400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"),
                                         (403, "PERMISSION_DENIED"), (404, "NOT_FOUND")])
def test_client_errors(srv, client, status, name):
    srv.enqueue(Fault.client_error(status, message=f"custom {status}"))
    with pytest.raises(errors.ClientError) as ei:
        client.models.generate_content(model=MODEL, contents="hi")
    assert (ei.value.code, ei.value.status, ei.value.message) == (status, name, f"custom {status}")


def test_slow_reply_past_timeout_raises_httpx2_read_timeout(srv):
    c = make_client(srv, timeout=250)                 # HttpOptions.timeout is in milliseconds
    srv.enqueue(Fault.slow(1.0), Fault.slow(1.0))
    t0 = time.monotonic()
    with pytest.raises(httpx2.ReadTimeout):
        c.models.generate_content(model=MODEL, contents="hi")
    with pytest.raises(httpx2.TimeoutException):      # ReadTimeout's base class
        list(c.models.generate_content_stream(model=MODEL, contents="hi"))
    assert time.monotonic() - t0 < 1.0
    assert srv.requests[0].headers["x-server-timeout"] == "1"   # ceil(seconds), sent by the SDK


def test_slow_reply_within_timeout_succeeds(srv):
    c = make_client(srv, timeout=2000)
    srv.enqueue(Fault.slow(0.1, then=Text("late")))
    assert c.models.generate_content(model=MODEL, contents="hi").text == "late"


def test_cut_stream_abort_yields_then_raises_remote_protocol_error(srv, client):
    srv.enqueue(Fault.cut_stream(after_chunks=2, text="abcdef"))
    got = []
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        for ch in client.models.generate_content_stream(model=MODEL, contents="hi"):
            got.append(ch.text)
    assert got == ["abc", "def"]
    assert len(srv.requests) == 1                     # no continuation token -> no SDK reconnect
    assert srv.replies[0].completed is False and srv.usage_sent() == Usage()


def test_cut_stream_eof_is_a_silently_truncated_stream(srv, client):
    srv.enqueue(Fault.cut_stream(after_chunks=2, text="abcdef", mode="eof"))
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert [c.text for c in chunks] == ["abc", "def"]
    assert all(c.candidates[0].finish_reason is None and c.usage_metadata is None for c in chunks)


def test_cut_non_stream_raises_remote_protocol_error(srv, client):
    srv.enqueue(Fault.cut_stream())
    with pytest.raises(httpx2.RemoteProtocolError):
        client.models.generate_content(model=MODEL, contents="hi")


def test_error_event_mid_stream_raises_after_chunks(srv, client):
    srv.enqueue(Fault.stream_error(after_chunks=1, status=503, text="part"))
    got = []
    with pytest.raises(errors.ServerError) as ei:
        for ch in client.models.generate_content_stream(model=MODEL, contents="hi"):
            got.append(ch.text)
    assert got == ["part"] and ei.value.code == 503


def test_malformed_json(srv, client):
    srv.enqueue(Fault.malformed_json(), Fault.malformed_json())
    with pytest.raises(json.JSONDecodeError):
        client.models.generate_content(model=MODEL, contents="hi")
    with pytest.raises(errors.UnknownApiResponseError):
        list(client.models.generate_content_stream(model=MODEL, contents="hi"))


@pytest.mark.parametrize("shape", ["no_candidates", "no_parts", "no_content"])
def test_empty_candidate(srv, client, shape):
    srv.enqueue(Fault.empty_candidate(shape, usage=Usage(prompt=5)))
    r = client.models.generate_content(model=MODEL, contents="hi")
    assert r.text is None and r.function_calls is None
    if shape == "no_candidates":
        assert r.candidates == []
    else:
        assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata.prompt_token_count == 5 and srv.usage_sent() == Usage(prompt=5)


def test_empty_candidate_max_tokens_in_stream(srv, client):
    srv.enqueue(Fault.empty_candidate("no_parts", finish_reason="MAX_TOKENS"))
    (chunk,) = list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert chunk.text is None and chunk.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_safety_blocked(srv, client):
    srv.enqueue(Fault.safety_blocked())
    r = client.models.generate_content(model=MODEL, contents="hi")
    assert r.text is None
    assert r.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert any(sr.blocked for sr in r.candidates[0].safety_ratings)


def test_prompt_blocked(srv, client):
    srv.enqueue(Fault.prompt_blocked())
    r = client.models.generate_content(model=MODEL, contents="hi")
    assert r.text is None and not r.candidates
    assert r.prompt_feedback.block_reason == types.BlockedReason.SAFETY


# ----------------------------------------------------------------- count tokens, bookkeeping

def test_count_tokens_does_not_consume_the_queue(srv, client):
    srv.enqueue(Text("later"))
    r = client.models.count_tokens(model=MODEL, contents="hello there friend")   # 18 chars
    assert r.total_tokens == math.ceil(18 / 4)
    assert srv.pending() == 1
    assert srv.requests_for(rpc="countTokens")[0].path == f"/v1/models/{MODEL}:countTokens"


def test_usage_sent_and_requests_for(srv, client):
    srv.enqueue(Text("a", usage=Usage(prompt=1, candidates=2)),
                Text("b", chunks=2, usage=Usage(prompt=10, candidates=20, cached=5)),
                Fault.server_error(500),
                Call("f", {}, usage=Usage(prompt=100, candidates=200, tool_use=7)))
    client.models.generate_content(model=MODEL, contents="x")
    list(client.models.generate_content_stream(model="gemini-2.5-pro", contents="x"))
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model=MODEL, contents="x")
    client.models.generate_content(model="gemini-2.5-pro", contents="x")
    assert srv.usage_sent() == Usage(prompt=111, candidates=222, cached=5, tool_use=7)
    assert srv.usage_sent(model="gemini-2.5-pro") == Usage(prompt=110, candidates=220, cached=5, tool_use=7)
    assert len(srv.requests_for(model=MODEL)) == 2
    assert len(srv.requests_for(model="models/gemini-2.5-pro", rpc="generateContent")) == 1
    assert len(srv.requests_for(rpc="streamGenerateContent")) == 1


def test_unknown_route_and_raw_reply(srv):
    status, body = _raw_post(srv, "/v1/nothing/here", {})
    assert status == 404 and body["error"]["status"] == "NOT_FOUND" and body["error"]["code"] == 404
    assert srv.requests[0].rpc is None and srv.requests[0].model is None
    srv.enqueue(Raw(418, {"error": {"code": 418, "message": "teapot", "status": "UNKNOWN"}}))
    assert _raw_post(srv, f"/v1/models/{MODEL}:generateContent", {"contents": []})[0] == 418


def test_known_models_404():
    with FakeGemini(api_key=KEY, known_models={MODEL}) as s:
        c = make_client(s)
        with pytest.raises(errors.ClientError) as ei:
            c.models.generate_content(model="gemini-0-nope", contents="hi")
        assert ei.value.code == 404 and ei.value.status == "NOT_FOUND"


# ----------------------------------------------------------------- async client (what a GUI worker uses)

@pytest.mark.asyncio
async def test_async_stream_and_faults(srv, client):
    srv.enqueue(Text("abcd", chunks=2, usage=Usage(prompt=1, candidates=1)),
                Fault.rate_limit(retry_delay_s=2),
                Fault.cut_stream(after_chunks=1, text="zz"))
    got = [c.text async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="hi")]
    assert got == ["ab", "cd"]
    with pytest.raises(errors.ClientError) as ei:
        await client.aio.models.generate_content(model=MODEL, contents="hi")
    assert ei.value.code == 429 and retry_delay_seconds(ei.value) == 2.0
    assert isinstance(ei.value.response, httpx2.Response)
    got = []
    with pytest.raises(httpx2.RemoteProtocolError):
        async for c in await client.aio.models.generate_content_stream(model=MODEL, contents="hi"):
            got.append(c.text)
    assert got == ["zz"]


@pytest.mark.asyncio
async def test_async_timeout(srv):
    c = make_client(srv, timeout=200)
    srv.enqueue(Fault.slow(1.0))
    with pytest.raises(httpx2.ReadTimeout):
        await c.aio.models.generate_content(model=MODEL, contents="hi")


# ----------------------------------------------------------------- helpers

def _raw_post(srv: FakeGemini, path: str, body: dict, key: str = KEY) -> tuple[int, dict]:
    req = urllib.request.Request(srv.base_url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "x-goog-api-key": key})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
