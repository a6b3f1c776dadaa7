"""The HTTP API on a real uvicorn server (127.0.0.1, free port) over the real agent: SmolLM2 in scoring
mode, the session's Chroma store of the whole ML-100K catalogue, and SQLite chat sessions.

The durability test runs `reasonrec serve` as a child process, kills it with SIGKILL in the middle
of a conversation, restarts it on the same SQLite file and continues the same session.
"""

from __future__ import annotations

import json

import httpx
import pytest
from helpers.servers import BackgroundServer, ServerProcess

from reasonrec.agent.interfaces.gate import ModelGate
from reasonrec.agent.interfaces.server import create_app
from reasonrec.errors import ConfigError


@pytest.fixture(scope="module")
def scoring_agent(ml100k, lm, indexed_store, retrieval_config):
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig, RankerConfig

    return RecommenderAgent(
        AgentConfig(retrieval=retrieval_config, ranker=RankerConfig(mode="scoring")), dataset=ml100k, model=lm
    )


@pytest.fixture(scope="module")
def client(scoring_agent, tmp_path_factory):
    from reasonrec.agent.chat.store import SessionStore

    store = SessionStore(tmp_path_factory.mktemp("sessions") / "sessions.sqlite3")
    with BackgroundServer(create_app(scoring_agent, store=store, max_queue=8)) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            yield c


def test_recommend_matches_the_library(client, scoring_agent, ml100k):
    r = client.post("/v1/recommend", json={"user_id": "196", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 5 == len(set(ids)) and body["mode"] == "scoring"
    assert not set(ids) & set(ml100k.history("196"))
    assert all(it["reason"].strip() and it["title"] == ml100k.items[it["item_id"]].title for it in body["items"])
    assert ids == scoring_agent.recommend(user_id="196", k=5).item_ids()  # scoring is deterministic


def test_recommend_with_query_and_filter(client, ml100k):
    body = {"query": "space adventure", "k": 3, "where": {"genre_Sci-Fi": True}, "exclude": ["50"]}
    r = client.post("/v1/recommend", json=body)
    assert r.status_code == 200, r.text
    ids = [it["item_id"] for it in r.json()["items"]]
    assert len(ids) == 3 and "50" not in ids
    assert all("Sci-Fi" in ml100k.items[i].genres for i in ids)


def test_item_lookup(client):
    r = client.get("/v1/items/50")
    assert r.status_code == 200
    assert r.json() | {"description": ""} == {
        "item_id": "50",
        "title": "Star Wars",
        "year": 1977,
        "genres": ["Action", "Adventure", "Romance", "Sci-Fi", "War"],
        "description": "",
    }
    r = client.get("/v1/items/no-such-item")
    assert r.status_code == 404 and "no-such-item" in r.json()["error"]


@pytest.mark.parametrize(
    "body, status, match",
    [
        ({"user_id": 196}, 422, "user_id: Input should be a valid string"),
        ({"user_id": "196", "k": "five"}, 422, "k: Input should be a valid integer"),
        ({"user_id": "196", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"user_id": "196", "k": 51}, 422, "k: Input should be less than or equal to 50"),
        ({"user_id": "196", "usr": "1"}, 422, "usr: Extra inputs are not permitted"),
        ({"history": "50,172"}, 422, "history: Input should be a valid list"),
        ([1, 2], 422, "Input should be a valid dictionary"),
        ({"user_id": "999999"}, 404, "unknown user '999999'"),
        ({"history": ["50", "no-such-item"]}, 404, "unknown item id"),
        ({}, 400, "give a `user_id`, a non-empty `history`, or a `query`"),
        ({"user_id": "196", "where": {"year": {"$bad": 1}}}, 400, "invalid `where` filter"),
    ],
)
def test_bad_requests_name_the_problem(client, body, status, match):
    r = client.post("/v1/recommend", json=body)
    assert r.status_code == status, r.text
    assert match in r.json()["error"]
    if status == 422:
        assert r.json()["detail"], "FastAPI's validation details are kept"


def test_malformed_json_is_422(client):
    r = client.post("/v1/recommend", content=b'{"user_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]


def test_health_openapi_and_page(client):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["mode"] == "scoring" and h["capacity"] == 9 and h["pending"] == 0
    assert h["model_id"] == "SmolLM2-135M-Instruct"
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/recommend", "/v1/items/{item_id}", "/v1/sessions", "/v1/sessions/{session_id}/messages"):
        assert path in paths
    assert "swagger" in client.get("/docs").text.lower()
    page = client.get("/")
    assert page.status_code == 200 and 'id="composer"' in page.text and "/static/app.js" in page.text
    assert "sendFeedback" in client.get("/static/app.js").text


def test_gate_rejects_a_negative_queue():
    with pytest.raises(ConfigError, match="`max_queue` must be an integer >= 0, got -1"):
        ModelGate(-1)


# ---- chat sessions -----------------------------------------------------------------------------
def test_session_conversation_and_thumbs_down(client):
    created = client.post("/v1/sessions", json={"user_id": "196"})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    turn = client.post(f"/v1/sessions/{sid}/messages", json={"text": "a comedy please"})
    assert turn.status_code == 200, turn.text
    t1 = turn.json()
    assert t1["session_id"] == sid and t1["turn"] == 1 and t1["reply"]
    first = [it["item_id"] for it in t1["recommendations"]["items"]]
    assert len(first) == t1["constraints"]["k"]

    t2 = client.post(f"/v1/sessions/{sid}/feedback", json={"item_id": first[0], "liked": False}).json()
    second = [it["item_id"] for it in t2["recommendations"]["items"]]
    assert t2["turn"] == 2 and first[0] not in second and len(second) == len(first)

    state = client.get(f"/v1/sessions/{sid}").json()
    assert state["user_id"] == "196" and first[0] in state["disliked"] and len(state["turns"]) == 2


@pytest.mark.parametrize(
    "path, body, status, match",
    [
        ("/v1/sessions/nope/messages", {"text": "hi"}, 404, "nope"),
        ("/v1/sessions/{sid}/messages", {"text": ""}, 422, "text: String should have at least 1 character"),
        ("/v1/sessions/{sid}/messages", {"txt": "hi"}, 422, "text: Field required"),
        ("/v1/sessions/{sid}/feedback", {"item_id": "50", "liked": "maybe"}, 422, "liked: Input should be a valid"),
        ("/v1/sessions", {"user_id": 5}, 422, "user_id: Input should be a valid string"),
    ],
)
def test_session_mistakes(client, path, body, status, match):
    sid = client.post("/v1/sessions", json={}).json()["id"]
    r = client.post(path.format(sid=sid), json=body)
    assert r.status_code == status, r.text
    assert match in r.json()["error"]


def test_unknown_session_is_404(client):
    r = client.get("/v1/sessions/no-such-session")
    assert r.status_code == 404 and "no-such-session" in r.json()["error"]


# ---- durability --------------------------------------------------------------------------------
@pytest.mark.slow
def test_session_survives_sigkill(indexed_store_dir, retrieval_config, tmp_path):
    """Kill the server mid-conversation; a restart on the same SQLite file continues the session."""
    config = tmp_path / "agent.json"
    config.write_text(
        json.dumps(
            {
                "ranker": {"mode": "scoring"},
                "model": {"num_threads": 1},  # one torch thread: far faster when other work shares the CPU
                "retrieval": {"persist_dir": str(indexed_store_dir), "collection": retrieval_config.collection},
            }
        )
    )
    args = ["--config", str(config), "--sessions", str(tmp_path / "sessions.sqlite3")]
    log = tmp_path / "server.log"
    srv = ServerProcess(args, log=log).start()
    try:
        sid = httpx.post(f"{srv.url}/v1/sessions", json={"user_id": "196"}).json()["id"]
        t1 = httpx.post(f"{srv.url}/v1/sessions/{sid}/messages", json={"text": "something funny"}, timeout=120)
        assert t1.status_code == 200, t1.text
        first = [it["item_id"] for it in t1.json()["recommendations"]["items"]]
    finally:
        srv.kill()  # SIGKILL: no shutdown hook can flush anything
    assert srv.proc.returncode == -9

    with ServerProcess(args, port=srv.port, log=log) as again:
        state = httpx.get(f"{again.url}/v1/sessions/{sid}").json()
        assert state["user_id"] == "196" and len(state["turns"]) == 1
        t2 = httpx.post(
            f"{again.url}/v1/sessions/{sid}/feedback", json={"item_id": first[0], "liked": False}, timeout=120
        )
        assert t2.status_code == 200, t2.text
        assert t2.json()["turn"] == 2 and t2.json()["session_id"] == sid
        assert first[0] not in [it["item_id"] for it in t2.json()["recommendations"]["items"]]


def test_warm_up_answers_one_request_unseen_and_embeds_once(ml100k, lm, indexed_store, retrieval_config, monkeypatch):
    """Start-up pays for the first request's one-time work (kernels, MiniLM for a chat message); a warm-up
    request that fails is logged, and the server still starts."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig, RankerConfig
    from reasonrec.agent.interfaces.server import warm_up
    from reasonrec.errors import NotEnoughItemsError
    from reasonrec.retrieval.embed import Embedder

    cfg = AgentConfig(retrieval=retrieval_config, ranker=RankerConfig(mode="scoring"))
    agent = RecommenderAgent(cfg, dataset=ml100k, model=lm)
    asked, embedded = [], []
    real_recommend, real_encode = agent.recommend, Embedder.encode
    monkeypatch.setattr(agent, "recommend", lambda **kw: asked.append(kw) or real_recommend(**kw))
    monkeypatch.setattr(Embedder, "encode", lambda self, texts: embedded.append(texts) or real_encode(self, texts))
    warm_up(agent)
    assert asked == [{"user_id": ml100k.users()[0], "k": 5}] and embedded == [["warm-up"]]
    assert agent.setup_clock.ms == 0  # nothing left for the first request's setup_ms

    def refuse(**kw):
        raise NotEnoughItemsError("only 2 unseen items match")

    monkeypatch.setattr(agent, "recommend", refuse)
    warm_up(agent)  # logged, not raised


def test_serving_app_warms_up_on_the_thread_that_answers(
    ml100k, lm, indexed_store, retrieval_config, tmp_path, monkeypatch
):
    """All of torch's work runs on the model thread, start-up included (server.serving_app says why: a
    second thread that has run torch made every later chat turn ~30 % slower on the 2-core CPU)."""
    import threading

    from fastapi.testclient import TestClient

    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.chat.store import SessionStore
    from reasonrec.agent.config import AgentConfig, RankerConfig
    from reasonrec.agent.interfaces.server import serving_app

    agent = RecommenderAgent(
        AgentConfig(retrieval=retrieval_config, ranker=RankerConfig(mode="scoring")), dataset=ml100k, model=lm
    )
    ran_on, real_recommend, real_many = [], agent.recommend, agent.recommend_many
    monkeypatch.setattr(
        agent, "recommend", lambda **kw: ran_on.append(threading.current_thread().name) or real_recommend(**kw)
    )
    monkeypatch.setattr(
        agent, "recommend_many", lambda *a, **kw: ran_on.append(threading.current_thread().name) or real_many(*a, **kw)
    )
    app = serving_app(agent, SessionStore(tmp_path / "s.sqlite3"), max_queue=2)
    with TestClient(app) as client:
        assert client.post("/v1/recommend", json={"user_id": "196", "k": 3}).status_code == 200
    app.state.gate.close()
    assert len(ran_on) >= 2 and len(set(ran_on)) == 1 and ran_on[0].startswith("reasonrec-model"), ran_on


def test_model_jobs_set_torch_threads_on_the_model_thread(monkeypatch):
    """Each gate job sets torch's thread count on the thread that runs it (gate.torch_threads_here)."""
    import asyncio
    import threading

    import torch

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.append((threading.current_thread().name, n)))
    gate = ModelGate(2)
    try:
        name = asyncio.run(gate.run(lambda: threading.current_thread().name))
    finally:
        gate.close()
    assert seen == [(name, torch.get_num_threads())] and name.startswith("reasonrec-model")
