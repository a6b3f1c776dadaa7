"""Fit the scoring softmax temperature of a model (or adapter) without training.

`reasonrec train` fits the temperature on its validation lists and saves it with the adapter. This
does the same for a base model, an adapter trained elsewhere or before calibration existed: rank the
validation item of `users` users among 19 unseen items (cand20 style; the test item stays unseen),
fit T, report the expected calibration error (ECE) of the top-1 probability before and after, and
with an adapter write T into its `reasonrec_train.json` so the agent uses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from reasonrec.agent.config import AgentConfig


class CalibrationResult(BaseModel):
    """What `calibrate` measured; `written_to` is the adapter metadata file it updated, if any."""

    model_id: str
    users: int
    val_ndcg10: float
    score_temperature: float
    ece_before: float
    ece_after: float
    mean_top1_prob_before: float
    mean_top1_prob_after: float
    hr1: float
    written_to: str | None = None


def calibrate(agent_cfg: AgentConfig, users: int = 200, seed: int = 0, batch_size: int = 8) -> CalibrationResult:
    """Fit and (for an adapter) save the temperature; see the module docstring.

    Raises:
        ConfigError: `users` < 1. DataError / ModelError: dataset or model cannot be loaded.
    """
    import torch

    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.model.loading import adapter_meta
    from reasonrec.agent.ranking.prompter import Prompter
    from reasonrec.errors import ConfigError
    from reasonrec.finetune.data import validation_lists, validation_users
    from reasonrec.finetune.evaluation import metrics as M
    from reasonrec.finetune.evaluation.split import leave_one_out
    from reasonrec.finetune.validation import fit_temperature, validation_logits
    from reasonrec.retrieval.types import natural_key

    if users < 1:
        raise ConfigError(f"`users` must be >= 1, got {users}")
    agent = RecommenderAgent(agent_cfg)
    split = leave_one_out(agent.dataset)
    catalogue = sorted(agent.items, key=natural_key)
    chosen = validation_users(split, users, seed)
    lm = agent.model
    prompter = Prompter(lm, agent_cfg)
    val = validation_lists(split, chosen, catalogue, seed)
    logits, targets, ndcg = validation_logits(lm.model, prompter, val, agent.items, batch_size, lm.device)
    temp = fit_temperature(logits, targets)
    hits = (logits.argmax(-1) == targets).tolist()

    def ece(t: float) -> dict[str, float]:
        return M.calibration(torch.softmax(logits / t, dim=-1).max(-1).values.tolist(), hits)

    before, after = ece(1.0), ece(temp)
    written = None
    if agent_cfg.model.adapter:
        meta_file = Path(agent_cfg.model.adapter).expanduser() / "reasonrec_train.json"
        meta = adapter_meta(meta_file.parent)  # {} for an adapter from elsewhere
        meta["score_temperature"] = temp
        meta["calibration"] = {"users": users, "seed": seed, "ece_before": before["ece"], "ece_after": after["ece"]}
        tmp = meta_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        tmp.replace(meta_file)  # atomic: a crash leaves the old metadata, never half a file
        written = str(meta_file)
    return CalibrationResult(
        model_id=lm.model_id, users=len(val), val_ndcg10=ndcg, score_temperature=temp,
        ece_before=before["ece"], ece_after=after["ece"], mean_top1_prob_before=before["mean_top1_prob"],
        mean_top1_prob_after=after["mean_top1_prob"], hr1=before["hr@1"], written_to=written,
    )  # fmt: skip
