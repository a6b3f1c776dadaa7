"""reasonrec: an LLM recommender agent with validated, reasoned rankings.

The public API is imported lazily (nothing heavy runs on `import reasonrec`)::

    from reasonrec import RecommenderAgent, AgentConfig
    agent = RecommenderAgent(AgentConfig())
    recs = agent.recommend(user_id="196", k=5)
"""

from __future__ import annotations

from typing import Any

from reasonrec.errors import (  # noqa: F401  (re-exported)
    ConfigError,
    DataError,
    ModelError,
    ParseError,
    ReasonRecError,
    RetrievalError,
    TrainError,
    UnknownItemError,
    UnknownUserError,
)

__version__ = "0.1.0"

# Cheap (one logging filter, no import of bitsandbytes) and needed before peft first imports it.
from reasonrec.quiet import drop_bitsandbytes_cpu_notice  # noqa: E402

drop_bitsandbytes_cpu_notice()

_LAZY = {
    "RecommenderAgent": "reasonrec.agent.api",
    "AgentConfig": "reasonrec.agent.config",
    "Recommendations": "reasonrec.agent.schemas",
    "Recommendation": "reasonrec.agent.schemas",
}


def __getattr__(name: str) -> Any:
    # Why lazy: importing the agent pulls in torch/transformers (seconds); `reasonrec --help` and the
    # retrieval layer must not pay for that.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reasonrec' has no attribute {name!r}")
