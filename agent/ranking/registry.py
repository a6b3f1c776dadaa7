"""The registry of ranking modes: `make_ranker` builds the ranker a config names, wired into its fallback chain."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.lazy import LazyModel
from reasonrec.agent.model.loading import LoadedModel
from reasonrec.agent.ranking.fused import lm_decides
from reasonrec.agent.ranking.generative import GenerativeRanker
from reasonrec.agent.ranking.hybrid import HybridRanker
from reasonrec.agent.ranking.prompter import Prompter
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.agent.ranking.scoring import ScoringRanker
from reasonrec.agent.schemas import Recommendations
from reasonrec.errors import ConfigError
from reasonrec.prompts.loader import template_version

log = logging.getLogger(__name__)


class Ranker(Protocol):
    """What the agent needs from a ranker: a mode name, its prompter (budgets) and batched `rank`."""

    mode: str
    prompter: Prompter

    def rank(
        self, requests: Sequence[RankRequest], progress: Callable[[int, int], None] | None = None
    ) -> list[Recommendations]: ...


def make_ranker(lm: LoadedModel | LazyModel, config: AgentConfig) -> Ranker:
    """The ranker for `config.ranker.mode`: generative, scoring or hybrid (a LazyModel only where
    `may_skip_model`: the other modes touch the model as they are built)."""
    served = template_version(config.prompt)
    if lm.adapter_template and lm.adapter_template != served:  # e.g. trained compact, served full
        log.warning("the adapter was trained with rank template %r but this config renders %r: "
                    "set `prompt.compact` as in training", lm.adapter_template, served)  # fmt: skip
    mode = config.ranker.mode
    if mode == "generative":
        ranker = GenerativeRanker(lm, config)
        ranker.rescue = ScoringRanker(lm, config).order  # the fallback chain's second link
        return ranker
    if mode == "scoring":
        return ScoringRanker(lm, config)
    if mode == "hybrid":
        return HybridRanker(lm, config)
    raise ConfigError(f"`ranker.mode` must be 'generative', 'scoring' or 'hybrid', got {mode!r}")


def may_skip_model(config: AgentConfig) -> bool:
    """Whether requests may be ranked as `config` says without the model at all: in scoring mode with
    `candidates.lm_weight` 0 a request with retrieval features is ordered by the fused retrieval score alone."""
    return config.ranker.mode == "scoring" and config.candidates.lm_weight == 0


def needs_model(config: AgentConfig, req: RankRequest) -> bool:
    """Whether ranking `req` as `config` says runs the model: generative writes the list with it and hybrid
    the reasons; scoring only where the LM's probabilities decide the order (fused.lm_decides)."""
    return config.ranker.mode != "scoring" or lm_decides(req, config.candidates.lm_weight)
