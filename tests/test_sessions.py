"""SessionStore: SQLite in WAL mode, atomic saves, durability across store objects and processes, threads."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest

from reasonrec.agent.chat.store import ChatConstraints, ChatTurn, SessionState, SessionStore
from reasonrec.agent.chat.titles import ItemRef
from reasonrec.errors import DataError, SessionConflictError, UnknownSessionError


def add_turn(state: SessionState, text: str = "hello") -> ChatTurn:
    """Append a turn the way ChatSession does (a clarifying turn: no recommendations needed)."""
    turn = ChatTurn(
        session_id=state.id,
        turn=len(state.turns) + 1,
        user_text=text,
        reply=f"reply to {text}",
        clarification=[ItemRef(item_id="183", title="Alien", year=1979)],
        constraints=state.constraints.model_copy(),
    )
    state.turns.append(turn)
    return turn


@pytest.fixture
def store(tmp_path):
    s = SessionStore(tmp_path / "chat" / "sessions.sqlite3")
    yield s
    s.close()


def test_create_save_load_round_trip(store):
    state = store.create(user_id="196")
    assert store.load(state.id).model_dump(exclude={"updated_at"}) == state.model_dump(exclude={"updated_at"})
    state.liked, state.disliked, state.recommended = ["50"], ["183"], ["1", "2"]
    state.constraints = ChatConstraints(genres=["Comedy"], excluded_genres=["Horror"], year_min=1980, k=3)
    add_turn(state, "a comedy")
    add_turn(state, "no horror")
    store.save(state)
    loaded = store.load(state.id)
    assert loaded.user_id == "196" and loaded.liked == ["50"] and loaded.disliked == ["183"]
    assert loaded.constraints == state.constraints
    assert [t.user_text for t in loaded.turns] == ["a comedy", "no horror"] and loaded.turns[1].turn == 2
    assert loaded.turns[0].clarification[0].title == "Alien"
    assert [s.id for s in store.list()] == [state.id]


def test_unknown_session_is_a_404_data_error(store):
    with pytest.raises(UnknownSessionError, match="unknown chat session 'nope'.*chat_session") as e:
        store.load("nope")
    assert isinstance(e.value, DataError) and e.value.http_status == 404


def test_wal_mode_and_a_second_store_on_the_same_file(store):
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    state = store.create()
    add_turn(state)
    store.save(state)
    other = SessionStore(store.path)  # e.g. a restarted server
    try:
        assert other.load(state.id).turns[0].user_text == "hello"
        again = other.load(state.id)
        add_turn(again, "second")
        other.save(again)
        assert [t.turn for t in store.load(state.id).turns] == [1, 2]
    finally:
        other.close()


def test_a_failed_save_leaves_the_previous_state(store):
    state = store.create()
    add_turn(state)
    store.save(state)
    broken = store.load(state.id)
    broken.liked = ["50"]
    add_turn(broken, "second")
    broken.turns[-1].turn = 7  # numbering gap: rejected before anything is written
    with pytest.raises(DataError, match="cannot be saved as turn 2"):
        store.save(broken)
    assert store.load(state.id).liked == [] and len(store.load(state.id).turns) == 1
    stale = store.load(state.id)
    fresh = store.load(state.id)
    add_turn(fresh, "second")
    store.save(fresh)
    stale.turns = []
    with pytest.raises(DataError, match="has 2 turns stored but this state was loaded with 1.*load it again"):
        store.save(stale)
    assert len(store.load(state.id).turns) == 2


def test_two_processes_answering_one_session_at_once_cannot_drop_a_turn(tmp_path):
    """Two server workers (`serve --workers 2`) load the same session, each answers a message and saves.

    Before the check, the later save kept its own state but found "turn 2" stored already, so its turn was
    silently lost while its reply reached the user. Now it is refused (409) and nothing of it is written.
    """
    path = tmp_path / "sessions.sqlite3"
    one, two = SessionStore(path), SessionStore(path)  # two connections, as two processes have
    state = one.create(user_id="196")
    add_turn(state, "first")
    one.save(state)
    a, b = one.load(state.id), two.load(state.id)
    add_turn(a, "comedies")
    a.liked = ["1"]
    add_turn(b, "horror")
    b.liked = ["2"]
    one.save(a)
    with pytest.raises(SessionConflictError, match="another message to it was answered meanwhile") as e:
        two.save(b)
    assert e.value.http_status == 409
    stored = two.load(state.id)
    assert [t.user_text for t in stored.turns] == ["first", "comedies"] and stored.liked == ["1"]
    two.save(stored)  # loaded again, it saves: the check follows each save
    add_turn(stored, "horror")
    two.save(stored)
    assert [t.user_text for t in one.load(state.id).turns] == ["first", "comedies", "horror"]
    one.close()
    two.close()


def test_a_process_killed_mid_write_leaves_the_previous_state(store):
    state = store.create()
    add_turn(state)
    store.save(state)
    # The child writes the new state row, then is SIGKILLed before the turn row and the COMMIT.
    script = f"""
import os, signal
from reasonrec.agent.chat.store import SessionStore, ChatTurn
store = SessionStore({str(store.path)!r})
state = store.load({state.id!r})
state.liked = ["50"]
state.turns.append(state.turns[0].model_copy(update={{"turn": 2, "user_text": "lost"}}))
store._insert_turn = lambda c, turn: os.kill(os.getpid(), signal.SIGKILL)
store.save(state)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    after = SessionStore(store.path)
    try:
        loaded = after.load(state.id)
        assert loaded.liked == [] and [t.user_text for t in loaded.turns] == ["hello"]
        add_turn(loaded, "after the crash")  # the database is usable: not left locked
        after.save(loaded)
        assert len(store.load(state.id).turns) == 2
    finally:
        after.close()


def test_threads_share_one_store(store):
    states = [store.create(user_id=str(i)) for i in range(6)]
    errors: list[BaseException] = []

    def worker(state: SessionState) -> None:
        try:
            for n in range(8):
                add_turn(state, f"message {n}")
                state.recommended.append(str(n))
                store.save(state)
                assert store.load(state.id).turns[-1].turn == n + 1
        except BaseException as e:  # surfaced below: an assertion in a thread does not fail the test
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for s in states:
        loaded = store.load(s.id)
        assert len(loaded.turns) == 8 and loaded.recommended == [str(n) for n in range(8)]
    assert len(store.list()) == 6


def test_delete_and_a_turn_of_another_session(store):
    a, b = store.create(), store.create()
    add_turn(b)
    a.turns = b.turns
    with pytest.raises(DataError, match=f"of session '{b.id}' cannot be saved"):
        store.save(a)
    assert store.delete(a.id) is True and store.delete(a.id) is False
    assert store.load(b.id).turns == []  # b's turn was never saved
    with pytest.raises(UnknownSessionError):
        store.load(a.id)


def test_unusable_paths_and_rows_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="cannot open the session store.*writable file path"):
        SessionStore(tmp_path)  # a folder, not a file
    store = SessionStore(tmp_path / "s.sqlite3")
    state = store.create()
    with sqlite3.connect(store.path) as c:
        c.execute("UPDATE sessions SET state = ? WHERE id = ?", ('{"id": 5, "turns": "x"', state.id))
    with pytest.raises(DataError, match=f"session '{state.id}'.*unreadable SessionState"):
        store.load(state.id)
    store.close()
