"""`TrainConfig`: one object for a LoRA / QLoRA fine-tuning run (`reasonrec train --config train.yaml`).

Like peft's `LoraConfig`, every field has a default, help text and a check that says how to fix a bad
value; unknown keys are errors. The LoRA hyper-parameters are passed to peft's own `LoraConfig`
unchanged. The agent's own configuration (model, prompt, retrieval) comes from `agent_config`, so the
adapter is trained on exactly the template, labels and candidate generator it will be served with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from reasonrec.agent.config import Buildable
from reasonrec.fields import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitFloat


class TrainConfig(Buildable):
    """A fine-tuning run. Defaults: a CPU-sized run on ML-100K with SmolLM2 (see README for scale)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    output_dir: Path = Field(Path("runs/lora"), description="Checkpoints, the best adapter and train_log.jsonl.")
    agent_config: Path | None = Field(
        None, description="YAML/JSON AgentConfig: model, prompt and retrieval used for data and validation."
    )
    model: str | None = Field(None, description="Overrides agent_config's model.name_or_path (HF id, folder, .gguf).")
    # --- data -------------------------------------------------------------------------------------
    train_users: int | None = Field(None, description="Seeded subset of users for training data (None = all).")
    positions_per_user: PositiveInt = Field(
        2, description="Training targets per user: the newest train items (never validation/test items)."
    )
    n_candidates: PositiveInt = Field(20, description="Candidates per prompt (the target + negatives), as served.")
    retrieved_share: UnitFloat = Field(
        0.5,
        description="Share of negatives taken from the candidate generator's top-N (the rest random unseen "
        "items), so the model sees both serving-time (retrieved) and cand20-style (random) lists.",
    )
    k: PositiveInt = Field(10, description="Lines in the generative target: the true item first, then co-liked picks.")
    reason_share: NonNegativeFloat = Field(
        0.25, description="Extra examples on the reason prompt (hybrid mode's second step), as a share of rank ones."
    )
    # --- loss -------------------------------------------------------------------------------------
    rank_loss_weight: NonNegativeFloat = Field(
        1.0, description="Weight of the label loss: cross-entropy over the candidates' label tokens after '['."
    )
    lm_loss_weight: NonNegativeFloat = Field(
        0.5, description="Weight of the token loss on the whole answer (the ranked list with reasons)."
    )
    retrieval_offset: NonNegativeFloat = Field(
        0.0,
        description="b: the label loss (and validation) read logit_LM + b x each candidate's fused retrieval "
        "score, so the LM learns the residual over retrieval (finetune/offsets.py); 0 = the LM alone. Serve "
        "with candidates.lm_weight 1 and retrieval_weight b, or refit both with `reasonrec calibrate --fusion`.",
    )
    distill_weight: UnitFloat = Field(
        0.0,
        description="w: the label loss is (1 - w) x cross-entropy on the true item + w x KL to the retrieval "
        "teacher softmax(s x fused retrieval score) over the candidates (finetune/distill.py); 0 = off.",
    )
    distill_scale: PositiveFloat | None = Field(
        None, description="s, the teacher's sharpness; None = fitted on the training examples' targets."
    )
    # --- LoRA -------------------------------------------------------------------------------------
    lora_r: PositiveInt = Field(16, description="LoRA rank.")
    lora_alpha: PositiveInt = Field(32, description="LoRA scaling numerator (alpha / r scales the update).")
    lora_dropout: UnitFloat = Field(0.05, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names that get adapters (Llama/Qwen/SmolLM naming).",
    )
    qlora: Literal["auto", "on", "off"] = Field(
        "auto", description="4-bit nf4 base weights (bitsandbytes, double quant, bf16 compute): auto = on with CUDA."
    )
    dtype: Literal["auto", "float32", "bfloat16"] | None = Field(
        None,
        description="Base weights: auto = bf16 on CUDA or a CPU with bf16 units, else fp32; None = the agent "
        "config's model.dtype. LoRA stays fp32.",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (long prompts, big models).")
    # --- optimisation -----------------------------------------------------------------------------
    max_steps: PositiveInt = Field(300, description="Optimizer steps.")
    batch_size: PositiveInt = Field(4, description="Examples per forward pass.")
    grad_accum: PositiveInt = Field(2, description="Forward passes per optimizer step.")
    lr: PositiveFloat = Field(3e-4, description="AdamW learning rate (linear warm-up, then cosine decay).")
    warmup_steps: NonNegativeInt = Field(10, description="Linear warm-up steps.")
    weight_decay: NonNegativeFloat = Field(0.0, description="AdamW weight decay on the LoRA weights.")
    max_grad_norm: PositiveFloat = Field(1.0, description="Gradient clipping.")
    seed: int = Field(0, description="Seeds the data (users, negatives, shuffles) and the training order.")
    # --- checkpoints and validation --------------------------------------------------------------
    save_every: PositiveInt = Field(50, description="Checkpoint (adapter + optimizer + position) every N steps.")
    keep_checkpoints: PositiveInt = Field(2, description="Newest checkpoints kept (the best adapter is kept apart).")
    eval_every: PositiveInt = Field(50, description="Validation NDCG@10 every N steps (and at the end).")
    val_users: PositiveInt = Field(64, description="Users whose validation item is ranked among 20 (cand20 style).")
    device: str | None = Field(None, description="auto, cpu, cuda, cuda:0, ...; None = the agent model.device.")
    num_threads: int | None = Field(None, description="torch CPU threads; None = the agent config's model.num_threads.")





    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.k > self.n_candidates:
            raise ValueError(f"`k` must be <= n_candidates ({self.n_candidates}), got {self.k}")
        if self.rank_loss_weight == 0 and self.lm_loss_weight == 0:
            raise ValueError("`rank_loss_weight` and `lm_loss_weight` are both 0: nothing would be learned")
        return self

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read YAML or JSON; flags given as `overrides` win.

        Raises:
            ConfigError: missing file, bad syntax, unknown key or bad value.
        """
        from reasonrec.agent.config import read_mapping

        data = read_mapping(path, "train config")
        return cls.build(**{**data, **overrides})

    def lora_config(self) -> Any:
        """peft's own LoraConfig, built from this config's fields."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
