"""Scale-out with an existing engine (issue 7.6): the store on a Chroma server (`chroma run`).

`chroma_server` (conftest.py) starts a real `chroma run --path P --host 127.0.0.1 --port N`. The
catalogue is indexed into it by the `reasonrec index --chroma-url` command in its own process, and into
an embedded store in this one; candidates and served recommendations must then be the same, item for
item and in the same order. See docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reasonrec.errors import RetrievalError
from reasonrec.retrieval import CandidateGenerator, Embedder, ItemStore, RetrievalConfig, build_index
from reasonrec.retrieval.types import Dataset

USERS = ["1", "13", "92", "196", "405"]


def test_http_client_store(chroma_server, ml100k, embedder):
    items = {str(i): ml100k.items[str(i)] for i in range(1, 61)}
    config = RetrievalConfig(chroma_url=chroma_server, collection="over-http")
    store, report = build_index(items, config, embedder=embedder)
    assert report.added == 60 and store.location == chroma_server
    assert build_index(items, config, embedder=embedder)[1].unchanged == 60
    assert store.query(text="Star Wars", n=1)[0].item_id == "50"


def test_unreachable_server():
    config = RetrievalConfig(chroma_url="http://127.0.0.1:9", collection="nowhere")
    with pytest.raises(RetrievalError, match="cannot open Chroma at http://127.0.0.1:9.*chroma run"):
        ItemStore(config, Embedder())


@pytest.fixture(scope="module")
def served_catalogue(chroma_server, ml100k, tmp_path_factory):
    """ML-100K items 1-400 and their interactions as CSV files, indexed by `reasonrec index --chroma-url`."""
    import csv

    folder = tmp_path_factory.mktemp("served")
    items = {str(i): ml100k.items[str(i)] for i in range(1, 401)}
    cat, inter = folder / "catalogue.csv", folder / "interactions.csv"
    with cat.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "year", "genres"])
        w.writerows([it.id, it.title, it.year or "", "|".join(it.genres)] for it in items.values())
    with inter.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp", "rating"])
        w.writerows(
            [r.user_id, r.item_id, int(r.timestamp), r.rating] for r in ml100k.interactions if r.item_id in items
        )
    # `index` also trains the sequence model; a one-epoch 16-d one keeps this fixture at seconds (the
    # default trains up to 30 epochs, minutes on a CPU) while still running that path.
    agent_cfg = folder / "agent.json"
    agent_cfg.write_text(json.dumps({"candidates": {"sasrec": {
        "embedding_dim": 16, "max_len": 20, "n_sample": 128, "batch_size": 128, "max_epochs": 1, "patience": 0,
    }}}))  # fmt: skip
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reasonrec.agent.interfaces.cli",
            "index",
            "--dataset",
            f"{cat},{inter}",
            "--chroma-url",
            chroma_server,
            "--config",
            str(agent_cfg),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "index: 400 added, 0 updated, 0 unchanged" in proc.stderr
    data = Dataset("catalogue", items, [r for r in ml100k.interactions if r.item_id in items])
    return f"{cat},{inter}", data


def test_cli_index_on_a_server_gives_the_candidates_of_the_embedded_store(
    served_catalogue, chroma_server, embedder, retrieval_config
):
    spec, data = served_catalogue
    remote_cfg = RetrievalConfig(chroma_url=chroma_server, collection="catalogue")  # the CLI names it by file
    remote = ItemStore(remote_cfg, embedder)
    assert remote.count() == 400 and remote.location == chroma_server
    local_cfg = retrieval_config.model_copy(update={"collection": "served-local"})
    local, _ = build_index(data, local_cfg, embedder=embedder)
    assert local.ids() == remote.ids()
    on_server = CandidateGenerator(remote, embedder, data.items, remote_cfg)
    embedded = CandidateGenerator(local, embedder, data.items, local_cfg)
    for user in USERS:
        history = data.history(user)
        for query in (None, "a funny animated film"):
            a = on_server.candidates(history, 20, query=query)
            b = embedded.candidates(history, 20, query=query)
            assert [c.item_id for c in a] == [c.item_id for c in b], user  # same items, same order
            assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-5)
    where = {"genre_Comedy": True}
    assert [c.item_id for c in on_server.candidates(data.history("196"), 10, where=where)] == [
        c.item_id for c in embedded.candidates(data.history("196"), 10, where=where)
    ]


def test_served_recommendations_match_the_embedded_store(served_catalogue, chroma_server, lm, retrieval_config):
    """The HTTP API over an agent whose store is the Chroma server (what `reasonrec serve --chroma-url` runs)."""
    from fastapi.testclient import TestClient

    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig
    from reasonrec.agent.interfaces.server import create_app

    spec, data = served_catalogue
    ranker = {"mode": "scoring", "k": 5}  # deterministic: one forward pass

    def agent(retrieval: dict) -> RecommenderAgent:
        return RecommenderAgent(
            AgentConfig.build(retrieval=retrieval, ranker=ranker, dataset=spec), dataset=data, model=lm
        )

    remote = agent({"chroma_url": chroma_server, "collection": "catalogue"})
    local = agent(retrieval_config.model_copy(update={"collection": "served-local"}).model_dump())
    with TestClient(create_app(remote)) as client:
        for user in USERS[:2]:
            resp = client.post("/v1/recommend", json={"user_id": user})
            assert resp.status_code == 200, resp.text
            served = [r["item_id"] for r in resp.json()["items"]]
            assert served == local.recommend(user_id=user).item_ids()
            assert len(served) == 5 and not set(served) & set(data.history(user))
