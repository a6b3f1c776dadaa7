"""The per-session turn locks of the chat live only while a turn holds or waits for them."""

from __future__ import annotations

import threading

from reasonrec.agent.chat import session as chat_session
from reasonrec.agent.chat.store import SessionStore


def test_turn_locks_are_released_when_turns_end(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3")
    state = store.create(user_id=None)
    chat = object.__new__(chat_session.ChatSession)  # no agent needed: only the turn mechanics run
    chat.store, chat._state = store, state
    before = dict(chat_session._LOCKS)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with chat._turn():
            entered.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(5)
    assert (str(store.path), state.id) in chat_session._LOCKS  # held while a turn runs
    release.set()
    t.join(5)
    for _ in range(3):
        with chat._turn():
            pass
    assert chat_session._LOCKS == before  # nothing left behind: the dict does not grow with sessions
