"""Streaming (agent/interfaces/streaming.py + agent/ranking/progress.py) with fake work: fast, no model."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import pytest
import torch

from reasonrec.agent.interfaces.gate import ModelGate
from reasonrec.agent.interfaces.http_errors import ServerBusyError
from reasonrec.agent.interfaces.streaming import stream_job
from reasonrec.agent.ranking import progress
from reasonrec.errors import UnknownUserError

ITEMS = {i: SimpleNamespace(id=i, title=f"Film {i}", year=1990, genres=("Comedy",)) for i in ("1", "2", "3")}
AGENT = SimpleNamespace(items=ITEMS)


class Tok:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(t)) for t in ids)


class Result:
    def model_dump(self, mode="json"):
        return {"items": ["2", "1"]}


def work(pause_s=0.3):
    picks = [SimpleNamespace(parsed=SimpleNamespace(entries=[SimpleNamespace(item_id=i) for i in ("2", "1")]))]
    progress.report_picks(picks)
    req = object()
    (crit,) = progress.reason_criteria(Tok(), 1, [(req, "2", "Like X, "), (req, "1", "")])
    prompt = [ord("p")]
    for step in ("i", "it"):  # two generated tokens per row
        crit(torch.tensor([prompt + [ord(c) for c in step]] * 2), None)
        time.sleep(pause_s)  # longer than EventSink.REASON_EVERY_S: each update is sent
    return Result()


def collect(gate, fn):
    async def main():
        events = await stream_job(gate, AGENT, fn)
        return [e async for e in events]

    out = []
    for raw in asyncio.run(main()):
        head, data = raw.strip().split("\n")
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_cards_then_growing_reasons_then_done():
    events = collect(ModelGate(max_queue=2), work)
    names = [e for e, _ in events]
    assert names[:3] == ["progress", "progress", "cards"] and names[-1] == "done"
    assert [c["item_id"] for c in events[2][1]["items"]] == ["2", "1"] and events[2][1]["items"][0]["rank"] == 1
    reasons = [d for e, d in events if e == "reason"]
    assert [r["text"] for r in reasons if r["item_id"] == "2"] == ["Like X, i", "Like X, it"]
    assert events[-1][1] == {"items": ["2", "1"]}


def test_reason_updates_within_the_interval_are_sent_as_the_latest_text():
    events = collect(ModelGate(max_queue=2), lambda: work(pause_s=0))
    reasons = [d for e, d in events if e == "reason"]
    assert [r["text"] for r in reasons if r["item_id"] == "2"] == ["Like X, it"]  # "Like X, i" folded in
    assert [e for e, _ in events][-1] == "done"  # and nothing pending is lost at the end


def test_a_failing_job_ends_with_an_error_event():
    def fail():
        raise UnknownUserError("unknown user '999999'")

    events = collect(ModelGate(max_queue=2), fail)
    assert events[-1] == ("error", {"error": "unknown user '999999'", "type": "UnknownUserError", "status": 404})


def test_without_a_listener_nothing_is_reported():
    assert progress.reason_criteria(Tok(), 1, [(object(), "1", "")]) == []
    progress.report_picks([object()])  # no sink: not even read


def test_a_full_gate_refuses_before_any_event():
    gate = ModelGate(max_queue=0)
    gate._pending = 1  # one job running, no queue
    with pytest.raises(ServerBusyError):
        collect(gate, work)
