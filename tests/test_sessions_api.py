"""Chat sessions as personal data: list (paged), read with paged turns, DELETE with every turn and like
(no row and no byte of it left in the SQLite file), idle expiry, and `reasonrec sessions list|delete|purge`.

Real uvicorn on 127.0.0.1 over SmolLM2 in scoring mode, real ML-100K and Chroma, a real SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest
from helpers.servers import BackgroundServer
from typer.testing import CliRunner

from reasonrec.agent.chat.store import SessionStore
from reasonrec.agent.interfaces.server import create_app


@pytest.fixture(scope="module")
def served(ml100k, lm, indexed_store, retrieval_config, tmp_path_factory):
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig, RankerConfig

    agent = RecommenderAgent(
        AgentConfig(retrieval=retrieval_config, ranker=RankerConfig(mode="scoring")), dataset=ml100k, model=lm
    )
    store = SessionStore(tmp_path_factory.mktemp("sessions-api") / "sessions.sqlite3")
    with BackgroundServer(create_app(agent, store=store)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        yield c, store


def _rows(path, session_id: str) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {
            "sessions": db.execute("SELECT COUNT(*) FROM sessions WHERE id = ?", (session_id,)).fetchone()[0],
            "turns": db.execute("SELECT COUNT(*) FROM turns WHERE session_id = ?", (session_id,)).fetchone()[0],
            "mentions": sum(
                db.execute(f"SELECT COUNT(*) FROM {t} WHERE {col} LIKE ?", (f"%{session_id}%",)).fetchone()[0]
                for t, col in (("sessions", "state"), ("turns", "data"))
            ),
        }


def test_delete_removes_every_row_and_byte_of_a_session(served):
    client, store = served
    keep = client.post("/v1/sessions", json={"user_id": "196"}).json()["id"]
    sid = client.post("/v1/sessions", json={"user_id": "196"}).json()["id"]
    turn = client.post(f"/v1/sessions/{sid}/messages", json={"text": "a comedy from the 90s"}).json()
    liked = [it["item_id"] for it in turn["recommendations"]["items"][:2]]
    for item_id in liked:
        r = client.post(f"/v1/sessions/{sid}/feedback", json={"item_id": item_id, "liked": True})
        assert r.status_code == 200, r.text
    state = client.get(f"/v1/sessions/{sid}").json()
    assert state["liked"] == liked and state["n_turns"] == 3
    assert _rows(store.path, sid) == {"sessions": 1, "turns": 3, "mentions": 4}  # the reproduction: it is there

    r = client.delete(f"/v1/sessions/{sid}")
    assert r.status_code == 204 and r.content == b""
    assert _rows(store.path, sid) == {"sessions": 0, "turns": 0, "mentions": 0}
    raw = b"".join(p.read_bytes() for p in store.path.parent.glob(store.path.name + "*"))  # db, -wal, -shm
    assert sid.encode() not in raw and b"a comedy from the 90s" not in raw, "deleted bytes must not linger"
    assert client.get(f"/v1/sessions/{sid}").status_code == 404
    assert client.delete(f"/v1/sessions/{sid}").json()["type"] == "UnknownSessionError"  # a second DELETE
    assert client.post(f"/v1/sessions/{sid}/messages", json={"text": "hi"}).status_code == 404
    assert client.get(f"/v1/sessions/{keep}").status_code == 200  # the other session is untouched


def test_sessions_list_is_paginated(served):
    client, _ = served
    made = [client.post("/v1/sessions", json={}).json()["id"] for _ in range(3)]
    first = client.get("/v1/sessions", params={"limit": 2}).json()
    assert len(first["sessions"]) == 2 and first["next_offset"] == 2 and first["total"] >= 3
    assert [s["id"] for s in first["sessions"]] == made[::-1][:2]  # most recently active first
    assert set(first["sessions"][0]) == {
        "id",
        "user_id",
        "n_turns",
        "n_liked",
        "n_disliked",
        "created_at",
        "updated_at",
    }
    rest = client.get("/v1/sessions", params={"limit": 100, "offset": 2}).json()
    assert rest["next_offset"] is None and len(rest["sessions"]) == first["total"] - 2
    assert made[0] in {s["id"] for s in rest["sessions"]}
    assert client.get("/v1/sessions", params={"limit": 101}).status_code == 422


def test_turns_are_paginated(served):
    client, _ = served
    sid = client.post("/v1/sessions", json={"user_id": "196"}).json()["id"]
    for text in ("a comedy", "no horror", "something older"):
        assert client.post(f"/v1/sessions/{sid}/messages", json={"text": text}).status_code == 200
    page = client.get(f"/v1/sessions/{sid}", params={"turns_offset": 1, "turns_limit": 1}).json()
    assert page["n_turns"] == 3 and page["turns_offset"] == 1
    assert [t["user_text"] for t in page["turns"]] == ["no horror"] and page["turns"][0]["turn"] == 2
    assert len(client.get(f"/v1/sessions/{sid}").json()["turns"]) == 3
    assert client.get(f"/v1/sessions/{sid}", params={"turns_limit": 0}).status_code == 422


def test_idle_sessions_expire(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3", idle_expiry_s=3600)
    old, fresh = store.create(user_id="196"), store.create()
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time() - 7200, old.id))
    assert [s.id for s in store.list()] == [fresh.id] and store.count() == 1
    with pytest.raises(Exception, match="never created, deleted, or expired"):
        store.load(old.id)
    assert store.purge() == 1 and _rows(store.path, old.id)["sessions"] == 0
    assert store.load(fresh.id).id == fresh.id
    with pytest.raises(Exception, match="idle_expiry_s"):
        SessionStore(tmp_path / "t.sqlite3", idle_expiry_s=0)


def test_cli_sessions_list_delete_purge(tmp_path):
    from reasonrec.agent.interfaces.cli import app

    db = tmp_path / "sessions.sqlite3"
    store = SessionStore(db)
    a, b, c = store.create(user_id="196"), store.create(), store.create()
    runner = CliRunner()
    listed = runner.invoke(app, ["sessions", "list", "--json", "--sessions", str(db)])
    assert listed.exit_code == 0, listed.output
    body = json.loads(listed.stdout)
    assert body["total"] == 3 and {s["id"] for s in body["sessions"]} == {a.id, b.id, c.id}
    assert runner.invoke(app, ["sessions", "delete", a.id, "--sessions", str(db)]).exit_code == 0
    assert _rows(db, a.id)["sessions"] == 0
    gone = runner.invoke(app, ["sessions", "delete", a.id, "--sessions", str(db)])
    assert gone.exit_code != 0 and a.id in str(gone.exception)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time() - 10 * 86400, b.id))
    assert runner.invoke(app, ["sessions", "purge", "--idle-days", "7", "--sessions", str(db)]).exit_code == 0
    assert [s.id for s in store.list()] == [c.id]
    assert runner.invoke(app, ["sessions", "purge", "--all", "--sessions", str(db)]).exit_code == 0
    assert store.count() == 0
