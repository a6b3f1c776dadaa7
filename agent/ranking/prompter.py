"""The one owner of prompt text, reason openers and token budgets, for serving and training alike.

Every ranker, the fine-tuning data (finetune/data.py), validation during training and calibration
render prompts here, so the rank prompt a model is trained on is the one it is served with, and the
room reserved for an answer (`answer_tokens`) is the room decoding may really take.
"""

from __future__ import annotations

from collections.abc import Sequence

from reasonrec.agent.config import AgentConfig
from reasonrec.agent.model.labels import label_token_ids
from reasonrec.agent.model.loading import LoadedModel
from reasonrec.agent.ranking.constrained import RankLogitsProcessor
from reasonrec.agent.ranking.evidence import ItemEvidence
from reasonrec.agent.ranking.reasons import reason_opener
from reasonrec.agent.ranking.request import RankRequest
from reasonrec.prompts.loader import ANSWER_PREFIX, render_rank_messages, render_reason_messages, template_version
from reasonrec.retrieval.types import Item

OPENER_TOKENS = 16  # room for a reason opener ("Like <history title>, it") in the constrained answer budget


class Prompter:
    """Chat-templated rank and reason prompts for one model's tokenizer and one config."""

    def __init__(self, lm: LoadedModel, config: AgentConfig):
        self.lm = lm
        self.config = config

    @property
    def template(self) -> str:
        """The rank template version rendered (recorded in every result and adapter)."""
        return template_version(self.config.prompt)

    def prompt_text(self, req: RankRequest) -> tuple[str, dict[str, str]]:
        """Chat-templated rank prompt (ending in the "[" prefill) and the label -> item id map."""
        labels, _ = label_token_ids(self.lm.tokenizer, len(req.candidates))
        pairs = list(zip(labels, req.candidates, strict=True))
        messages = render_rank_messages(req.history, pairs, req.k, req.query, self.config.prompt)
        text = self.lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + ANSWER_PREFIX, {label: item.id for label, item in pairs}

    def reason_text(
        self, history: Sequence[Item], item: Item, query: str | None, evidence: ItemEvidence | None = None
    ) -> tuple[str, str]:
        """Chat-templated reason prompt for one pick, ending in the reason opener; and the opener.

        Serving (hybrid mode) and training data (finetune/data.py) both build reason prompts here. With
        `evidence` (agent/ranking/evidence.py) the prompt lists its facts and the reason starts from its opener.
        """
        facts = evidence.facts(self.config.prompt.domain) if evidence is not None else None
        messages = render_reason_messages(history, item, query, self.config.prompt, facts=facts)
        text = self.lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        opener = self.opener(item, history, evidence)
        return text + opener, opener

    def opener(self, item: Item, history: Sequence[Item], evidence: ItemEvidence | None = None) -> str:
        """The start of `item`'s reason: its evidence's opener, else ranking.reasons.reason_opener; "" with
        `ranker.reason_opener` off."""
        if not self.config.ranker.reason_opener:
            return ""
        return evidence.opener if evidence is not None else reason_opener(item, history, self.config.prompt.domain)

    def prefix_text(self) -> str:
        """The chat-templated text up to the first history title: the same for every request with history.

        Scoring mode caches the keys/values of these tokens once (ranking/prefix.py). Only the tokens a
        batch's prompts really share are used, so a request without history simply shares fewer.
        """
        sentinel = "reasonrec-prefix-sentinel"
        tok = self.lm.tokenizer
        messages = render_rank_messages([sentinel], [("A", "x")], 1, None, self.config.prompt)
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if sentinel not in text:  # a custom template that hides history: up to the user message's content
            messages[-1]["content"] = sentinel
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text[: text.index(sentinel)] if sentinel in text else ""

    # ---- budgets: one definition each ----------------------------------------------------------
    def reason_tokens(self) -> int:
        """Tokens one generated reason may take (hybrid and constrained generative mode)."""
        return self.config.ranker.reason_max_new_tokens or self.config.prompt.max_reason_words * 2

    def reason_chars(self) -> int:
        """Characters a reason is cut to."""
        return self.config.prompt.max_reason_words * 12

    def answer_tokens(self, k: int, opener_tokens: int | None = None) -> int:
        """Tokens a generated ranked list of k lines may take: what the prompt must leave room for.

        Constrained decoding forces each pick's opener after "]" on top of the reason budget, so the
        opener's room is counted here too (it was not, and the two budgets drifted apart). Generation
        passes its longest real opener; the context budget, which runs before openers exist, an estimate.
        """
        if self.config.ranker.max_new_tokens:
            return self.config.ranker.max_new_tokens
        if opener_tokens is None:
            opener_tokens = OPENER_TOKENS if self.config.ranker.reason_opener else 0
        if self.config.ranker.constrained:
            return RankLogitsProcessor.max_new_tokens(k, self.reason_tokens() + opener_tokens)
        return k * (self.config.prompt.max_reason_words * 2 + 8)
