"""The HTTP contract of issue 18, one test per bad request or file: each reproduces it and asserts the
clean outcome. Real uvicorn on 127.0.0.1, real SmolLM2 in scoring mode, real ML-100K rows and Chroma.

Plus a CI-sized schemathesis run (`bench/api_contract.py`, every check) against the same server.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import unicodedata
from pathlib import Path

import httpx
import pytest
from helpers.servers import ROOT, BackgroundServer

from reasonrec.agent.interfaces.http_errors import Redactor
from reasonrec.agent.interfaces.http_schemas import MAX_BODY_BYTES, MAX_HISTORY, MAX_MESSAGE_CHARS, MAX_QUERY_CHARS
from reasonrec.agent.interfaces.server import create_app
from reasonrec.errors import ConfigError, ModelError, RetrievalError


@pytest.fixture(scope="module")
def served(ml100k, lm, indexed_store, retrieval_config, tmp_path_factory):
    """(client, app, session store) over a scoring-mode agent."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.chat.store import SessionStore
    from reasonrec.agent.config import AgentConfig, RankerConfig

    agent = RecommenderAgent(
        AgentConfig(retrieval=retrieval_config, ranker=RankerConfig(mode="scoring")), dataset=ml100k, model=lm
    )
    store = SessionStore(tmp_path_factory.mktemp("contract-sessions") / "sessions.sqlite3")
    app = create_app(agent, store=store)

    @app.get("/test-only/chroma-failure", include_in_schema=False)
    def _fail() -> None:  # what the store raised in issue 18, with the store's real folder in it
        where = retrieval_config.resolved_persist_dir()
        raise RetrievalError(f"Chroma query failed on collection 'ml-100k-test' at {where}: InvalidArgumentError")

    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=120) as client:
        yield client, app, store


@pytest.fixture
def client(served):
    return served[0]


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert {"error", "type"} <= set(body) and isinstance(body["error"], str) and isinstance(body["type"], str)
    assert set(body) <= {"error", "type", "detail"}, body
    return body


# ---- `where`: operators checked before Chroma, a 400 that names them ----------------------------
@pytest.mark.parametrize(
    "where, named",
    [
        ({"$bogus": 1}, "'$bogus'"),
        ({"year": {"$bogus": 1}}, "'$bogus'"),
        ({"$or": [{"year": {"$gte": 1980}}, {"$bogus": 1}]}, "'$bogus'"),
        ({"$and": [{"genre_Comedy": True}, {"year": {"$regex": "19.*"}}]}, "'$regex'"),
        ({"$and": [{"$or": [{"a": 1}, {"b": {"$like": 2}}]}, {"c": 3}]}, "'$like'"),
        ({}, "exactly one key"),
    ],
)
def test_a_bad_where_operator_is_a_400_naming_it(client, where, named, retrieval_config):
    body = _error(client.post("/v1/recommend", json={"user_id": "196", "where": where}), 400)
    assert named in body["error"] and body["type"] == "ConfigError"
    assert str(retrieval_config.resolved_persist_dir()) not in body["error"]


def test_where_in_the_schema_matches_what_the_server_accepts(client):
    """`{}` is outside the schema (minProperties 1) and rejected; a filter inside it is served."""
    schema = client.get("/openapi.json").json()["components"]["schemas"]["RecommendRequest"]
    branches = [b for b in schema["properties"]["where"]["anyOf"] if b.get("type") != "null"]
    assert len(branches) == 2  # a field condition or a $and/$or, each an object with exactly one key
    assert all(b["type"] == "object" and b["minProperties"] == 1 == b["maxProperties"] for b in branches)
    _error(client.post("/v1/recommend", json={"user_id": "196", "where": {}}), 400)
    ok = client.post("/v1/recommend", json={"user_id": "196", "k": 3, "where": {"year": {"$lt": 1970}}})
    assert ok.status_code == 200 and all(it["year"] < 1970 for it in ok.json()["items"])
    few = client.post("/v1/recommend", json={"user_id": "196", "where": {"year": {"$gt": 3000}}})
    assert _error(few, 409)["type"] == "NotEnoughItemsError"


# ---- no server path in any error body -----------------------------------------------------------
def test_no_error_body_reveals_a_server_path(client, served, retrieval_config, tmp_path):
    store = served[2]
    roots = [str(store.path.parent), str(retrieval_config.resolved_persist_dir()), str(Path.home()), str(ROOT)]
    answers = [
        client.get("/test-only/chroma-failure"),  # the store's error of issue 18, path and all
        client.get("/v1/sessions/no-such-session"),
        client.post("/v1/sessions/no-such-session/messages", json={"text": "hi"}),
        client.post("/v1/recommend", json={"user_id": "196", "where": {"$bogus": 1}}),
        client.post("/v1/recommend", json={"user_id": "999999"}),
        client.get("/v1/items/nope"),
    ]
    for r in answers:
        body = _error(r, r.status_code)
        assert not any(root in r.text for root in roots), r.text
        assert "chat_session()" not in body["error"], "no Python advice to an HTTP client"
    assert "<server path>" in answers[0].json()["error"] and answers[0].status_code == 503
    assert "POST /v1/sessions" in answers[1].json()["error"]


def test_redactor_hides_server_folders_but_not_urls(tmp_path):
    redact = Redactor([tmp_path / "s.sqlite3"])
    text = f"cannot open {tmp_path}/s.sqlite3 or {Path.home()}/.cache/x; POST /v1/sessions"
    assert redact(text) == "cannot open <server path> or <server path>; POST /v1/sessions"


# ---- one error shape, FastAPI's own errors included -----------------------------------------------
@pytest.mark.parametrize(
    "method, path, kwargs, status, kind",
    [
        ("GET", "/no/such/route", {}, 404, "NotFound"),
        ("PATCH", "/v1/recommend", {"json": {}}, 405, "MethodNotAllowed"),
        ("PUT", "/v1/sessions/abc", {"json": {}}, 405, "MethodNotAllowed"),
        ("POST", "/v1/recommend", {"content": b'{"user_id": "\xff"}', "headers": {"content-type": "application/json"}},
         400, "BadRequest"),
        ("POST", "/v1/recommend", {"content": b'{"user_id": ', "headers": {"content-type": "application/json"}},
         422, "ValidationError"),
        ("POST", "/v1/recommend", {"json": {"user_id": 196}}, 422, "ValidationError"),
        ("GET", "/v1/sessions?limit=0", {}, 422, "ValidationError"),
    ],
)  # fmt: skip
def test_every_error_has_one_shape(client, method, path, kwargs, status, kind):
    body = _error(client.request(method, path, **kwargs), status)
    assert body["type"] == kind


def test_405_allows_every_method_of_the_path(client):
    r = client.request("PATCH", "/v1/sessions/abc")
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"  # both routes of the path


# ---- strict types ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/v1/recommend", {"user_id": "196", "k": True}, "k"),
        ("/v1/recommend", {"user_id": "196", "k": "5"}, "k"),
        ("/v1/recommend", {"user_id": "196", "k": 2.5}, "k"),
        ("/v1/recommend", {"user_id": "196", "exclude": "50"}, "exclude"),
        ("/v1/sessions/{sid}/feedback", {"item_id": "50", "liked": 0}, "liked"),
        ("/v1/sessions/{sid}/feedback", {"item_id": "50", "liked": "true"}, "liked"),
        ("/v1/sessions/{sid}/feedback", {"item_id": 50, "liked": True}, "item_id"),
    ],
)
def test_types_the_schema_forbids_are_rejected(client, path, body, field):
    sid = client.post("/v1/sessions").json()["id"]
    detail = _error(client.post(path.format(sid=sid), json=body), 422)["detail"]
    assert [d["loc"][-1] for d in detail] == [field]


def test_a_whole_float_is_the_integer_json_schema_says_it_is(client):
    r = client.post("/v1/recommend", json={"user_id": "196", "k": 3.0})
    assert r.status_code == 200 and len(r.json()["items"]) == 3


# ---- size limits ------------------------------------------------------------------------------------
def test_a_5mb_body_is_a_413_without_echo(client):
    big = b'{"user_id": "196", "query": "' + b"x" * 5_000_000 + b'"}'
    r = client.post("/v1/recommend", content=big, headers={"content-type": "application/json"})
    assert _error(r, 413)["type"] == "PayloadTooLarge" and len(r.content) < 500
    chunks = (b"[" + b'"1",' * 50_000 + b'"1"]' for _ in range(3))  # chunked: no Content-Length to trust
    r = client.post("/v1/recommend", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_history_and_query_caps_are_in_the_schema_and_enforced(client):
    props = client.get("/openapi.json").json()["components"]["schemas"]["RecommendRequest"]["properties"]
    history = next(s for s in props["history"]["anyOf"] if s.get("type") == "array")
    query = next(s for s in props["query"]["anyOf"] if s.get("type") == "string")
    assert history["maxItems"] == MAX_HISTORY and history["items"]["maxLength"] == 64
    assert query["maxLength"] == MAX_QUERY_CHARS
    message = client.get("/openapi.json").json()["components"]["schemas"]["MessageIn"]["properties"]["text"]
    assert message["maxLength"] == MAX_MESSAGE_CHARS
    detail = _error(client.post("/v1/recommend", json={"history": ["50"] * (MAX_HISTORY + 1)}), 422)["detail"]
    assert detail[0]["loc"] == ["body", "history"]
    _error(client.post("/v1/recommend", json={"history": ["50"] * 600_000}), 413)  # the body limit comes first
    assert MAX_BODY_BYTES > (MAX_HISTORY * 67) * 2  # a schema-valid body always fits under the limit


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_a_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/recommend", content=b'{"user_id": "196"}', headers=headers)
    assert _error(r, 415)["type"] == "UnsupportedMediaType"
    ok = client.post(
        "/v1/recommend",
        content=b'{"user_id": "196", "k": 2}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


# ---- every status in the OpenAPI document -------------------------------------------------------------
STATUSES = {
    ("post", "/v1/recommend"): {"200", "400", "404", "409", "413", "415", "422", "429", "503"},
    ("get", "/v1/items/{item_id}"): {"200", "404", "422"},
    ("post", "/v1/sessions"): {"201", "400", "404", "413", "415", "422"},
    ("get", "/v1/sessions"): {"200", "422"},
    ("get", "/v1/sessions/{session_id}"): {"200", "404", "422"},
    ("delete", "/v1/sessions/{session_id}"): {"204", "404", "422"},
    ("post", "/v1/sessions/{session_id}/messages"): {"200", "400", "404", "409", "413", "415", "422", "429", "503"},
    ("post", "/v1/sessions/{session_id}/feedback"): {"200", "400", "404", "409", "413", "415", "422", "429", "503"},
}


def test_every_status_of_every_route_is_documented(client):
    doc = client.get("/openapi.json").json()
    documented = {(m, p): set(op["responses"]) for p, ops in doc["paths"].items() for m, op in ops.items()}
    for route, statuses in STATUSES.items():
        assert documented[route] == statuses, route
        for status in statuses - {"200", "201", "204"}:
            ref = doc["paths"][route[1]][route[0]]["responses"][status]["content"]["application/json"]["schema"]
            assert ref["$ref"].endswith("/ErrorBody")
    assert "Retry-After" in doc["paths"]["/v1/recommend"]["post"]["responses"]["429"]["headers"]


def test_docs_render_from_local_assets(client):
    for page, asset in (("/docs", "/docs-assets/swagger-ui-bundle.js"), ("/redoc", "/docs-assets/redoc.standalone.js")):
        html = client.get(page).text
        assert asset in html and "cdn" not in html.lower() and "fonts.googleapis" not in html
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100_000
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200


# ---- the converted-model cache -----------------------------------------------------------------------
def test_two_different_model_gguf_files_get_different_cache_entries(tmp_path, monkeypatch):
    from reasonrec.agent.model import loading

    monkeypatch.setenv("REASONREC_MODELS", str(tmp_path / "models"))
    a, b = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for path, payload in ((a, b"GGUF first model"), (b, b"GGUF second model")):
        path.parent.mkdir()
        path.write_bytes(payload)
    rec_a, rec_b = loading.source_record(a), loading.source_record(b)
    assert loading.cache_key(rec_a) != loading.cache_key(rec_b)
    assert loading.cache_key(rec_a).startswith("model-") and rec_a["transformers"] in loading.cache_key(rec_a)
    # A's conversion is cached; B (same name, other bytes) must never be served A's folder.
    folder_a = loading.models_dir() / loading.cache_key(rec_a)
    folder_a.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (folder_a / name).write_text("{}")
    (folder_a / loading.SOURCE_RECORD).write_text(json.dumps(rec_a))
    assert loading.converted(a) == folder_a  # verified: record, weights and config match
    with pytest.raises(ModelError) as e:  # B is not a real GGUF: converting it fails, loudly
        loading.converted(b)
    assert "model.gguf" in str(e.value) and not (loading.models_dir() / loading.cache_key(rec_b)).exists()
    # A tampered entry (another file's record under A's key) is rebuilt, not trusted.
    (folder_a / loading.SOURCE_RECORD).write_text(json.dumps(rec_b))
    with pytest.raises(ModelError):
        loading.converted(a)
    assert not folder_a.exists() or not (folder_a / "model.safetensors").read_text() == "{}"


def test_the_cache_entry_of_the_real_model_is_verified(lm):
    from reasonrec.agent.model import loading

    gguf = loading.packaged_gguf()
    folder = loading.converted(gguf)
    record = json.loads((folder / loading.SOURCE_RECORD).read_text())
    assert record["sha256"] == loading.file_sha256(gguf) and folder.name == loading.cache_key(record)


# ---- output sanitising and the collection of one's own catalogue ------------------------------------
BIDI, ZERO_WIDTH = "\u202e", "\u200b\u2060\ufeff"


@pytest.fixture(scope="module")
def own_catalogue(ml100k, tmp_path_factory):
    """60 ML-100K comedies renamed with an RTL override and zero-width characters, named 'bidi-films'."""
    from reasonrec.retrieval.types import Dataset

    ids = [i for i, it in ml100k.items.items() if "Comedy" in it.genres][:60]
    items = {i: ml100k.items[i].model_copy(update={"title": f"{BIDI}{ml100k.items[i].title}{ZERO_WIDTH}"}) for i in ids}
    inter = [r for r in ml100k.interactions if r.item_id in items]
    return Dataset("bidi-films", items, inter), tmp_path_factory.mktemp("own-chroma")


def _invisible(text: str) -> list[str]:
    return [hex(ord(c)) for c in text if unicodedata.category(c) in ("Cc", "Cf")]


def test_control_characters_never_reach_output_titles_or_reasons(own_catalogue, lm, ml100k):
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig, RankerConfig
    from reasonrec.retrieval import RetrievalConfig

    data, store_dir = own_catalogue
    cfg = AgentConfig(retrieval=RetrievalConfig(persist_dir=store_dir), ranker=RankerConfig(mode="scoring"))
    agent = RecommenderAgent(cfg, dataset=data, model=lm)
    assert agent.config.retrieval.collection == "bidi-films"  # default name, own catalogue: its own collection
    history = list(data.items)[:5]
    recs = agent.recommend(history=history, k=5)
    assert set(recs.item_ids()) <= set(data.items) - set(history)
    for r in recs.items:
        assert not _invisible(r.title) and not _invisible(r.reason), (r.title, r.reason)
        assert r.title == ml100k.items[r.item_id].title  # the same text, minus the invisible characters
    assert any(ml100k.items[h].title in r.reason for r in recs.items for h in history), "reasons name history titles"
    with BackgroundServer(create_app(agent, store=None)) as srv:
        item = httpx.get(f"{srv.url}/v1/items/{history[0]}").json()
        assert item["title"] == ml100k.items[history[0]].title


def test_own_catalogue_default_collection_and_a_foreign_collection(own_catalogue, lm, ml100k, embedder):
    """Issue 18's case: ML-100K's collection exists, one's own catalogue leaves `collection` at its default."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig, RankerConfig
    from reasonrec.retrieval import RetrievalConfig, build_index
    from reasonrec.retrieval.types import Dataset

    data, store_dir = own_catalogue
    others = Dataset("ml-100k", {i: ml100k.items[i] for i in list(ml100k.items)[-40:]}, [])
    for name in ("ml-100k", "films"):  # ML-100K items in the default collection, and in one named 'films'
        build_index(others, RetrievalConfig(persist_dir=store_dir, collection=name), embedder=embedder)
    scoring = RankerConfig(mode="scoring")
    agent = RecommenderAgent(AgentConfig(retrieval=RetrievalConfig(persist_dir=store_dir), ranker=scoring),
                             dataset=data, model=lm)  # fmt: skip
    recs = agent.recommend(history=list(data.items)[:3], k=3)
    assert agent.config.retrieval.collection == "bidi-films" and set(recs.item_ids()) <= set(data.items)
    foreign = AgentConfig(retrieval=RetrievalConfig(persist_dir=store_dir, collection="films"), ranker=scoring)
    agent = RecommenderAgent(foreign, dataset=data, model=lm)
    message = r"collection 'films' holds 40 item id\(s\) that catalogue 'bidi-films' lacks.*another catalogue"
    with pytest.raises(ConfigError, match=message + r".*retrieval.collection"):
        agent.recommend(history=list(data.items)[:3], k=3)


# ---- schemathesis, CI-sized -----------------------------------------------------------------------------
def _bench():
    spec = importlib.util.spec_from_file_location("reasonrec_bench_api_contract", ROOT / "bench" / "api_contract.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_schemathesis_finds_no_failure(served):
    assert shutil.which("schemathesis") or Path(sys.executable).with_name("schemathesis").is_file(), (
        "schemathesis is a dev dependency: pip install 'schemathesis==4.32.5'"
    )
    client = served[0]
    report = _bench().run_contract(str(client.base_url).rstrip("/"), max_examples=6, seed=0, timeout_s=120,
                                   phases="examples,fuzzing,stateful")  # fmt: skip
    print(f"schemathesis: {report.requests} requests, {report.failures} failures, {report.wall_s} s")
    assert report.failures == 0 and report.exit_code == 0, report.failed_cases
    assert report.requests >= 80 and len(report.by_check) >= 10, report
    assert report.by_check["positive_data_acceptance"]["success"] > 0
