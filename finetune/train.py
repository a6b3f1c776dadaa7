"""`train(TrainConfig)`: LoRA / QLoRA fine-tuning of the ranking LM on interactions (validation: validation.py).

    python -m reasonrec.finetune.train --output-dir runs/lora --max-steps 300   # same as `reasonrec train`
    reasonrec evaluate --protocol cand20 --methods reasonrec-lora-scoring --adapter runs/lora/adapter

config -> data (finetune/data.py, the serving template) -> model (+ peft LoRA; 4-bit nf4 base on CUDA)
-> loop (accelerate; label loss + answer-token loss) -> validation NDCG@10 every `eval_every` steps,
the best adapter kept in `<output_dir>/adapter/` -> atomic checkpoints every `save_every` steps. Run the
same command again after a crash and it resumes from the newest checkpoint (same data, same order).
"""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from reasonrec.errors import ConfigError, TrainError
from reasonrec.finetune import distill
from reasonrec.finetune.checkpoint import checkpoints, load_checkpoint, save_adapter, save_checkpoint
from reasonrec.finetune.config import TrainConfig
from reasonrec.finetune.data import build_examples, collate, data_hash, encode, validation_lists, validation_users
from reasonrec.finetune.validation import retrieval_ndcg, validate

Progress = Callable[[str, int, int, dict], None]  # (stage, done, total, figures)
_RESUME_KEYS_FREE = {"max_steps", "eval_every", "save_every", "keep_checkpoints", "num_threads", "output_dir"}


class TrainResult(BaseModel):
    """What a run produced and measured (also written to `<output_dir>/train_result.json`)."""

    output_dir: str
    adapter_dir: str = Field(description="The adapter with the best validation NDCG@10.")
    steps: int
    best_step: int
    best_val_ndcg10: float
    val_history: list[dict[str, float]]
    resumed_from_step: int | None = None
    n_examples: int
    n_rank_examples: int
    data_hash: str
    template_version: str
    base_model: str
    device: str
    dtype: str
    qlora: bool
    train_seconds: float = Field(description="Optimizer steps only (validation and data building excluded).")
    samples_per_s: float
    peak_memory_gb: float = Field(description="CUDA: max allocated; CPU: peak RSS of the process.")
    final_loss: float | None = None
    distill_scale: float | None = Field(None, description="The teacher's sharpness the run used (distillation).")


def train(cfg: TrainConfig, progress: Progress | None = None) -> TrainResult:
    """Fine-tune a LoRA adapter; resumes from `cfg.output_dir`'s newest checkpoint when there is one.

    Raises:
        ConfigError: bad options, or `output_dir` holds a run with a different configuration.
        DataError / ModelError: the dataset or the model cannot be loaded.
        TrainError: the loss became NaN/inf.
    """
    import torch
    from accelerate import Accelerator

    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig
    from reasonrec.agent.model.loading import load_model
    from reasonrec.agent.ranking.prompter import Prompter
    from reasonrec.finetune.evaluation.baselines import ItemKNNRanker
    from reasonrec.finetune.evaluation.split import leave_one_out
    from reasonrec.prompts.loader import template_version
    from reasonrec.retrieval.types import natural_key

    note = progress or (lambda *a: None)
    agent_cfg = AgentConfig.from_file(cfg.agent_config) if cfg.agent_config else AgentConfig()
    model_cfg = _model_config(cfg, agent_cfg)
    agent = RecommenderAgent(agent_cfg)
    split = leave_one_out(agent.dataset)
    catalogue = sorted(agent.items, key=natural_key)
    lm = load_model(model_cfg)
    prompter = Prompter(lm, agent_cfg)
    knn = ItemKNNRanker(split, catalogue)
    train_offsets, val_offsets = _offset_fns(agent, split, cfg)
    examples = build_examples(
        agent, split, cfg, knn, prompter, lambda d, t: note("building data", d, t, {}), offsets=train_offsets
    )
    digest = data_hash(examples)
    teacher = distill.run_scale(cfg, examples)
    start_ckpt = _check_resume(cfg, digest)
    encoded = encode(examples, lm.tokenizer)
    val = validation_lists(split, validation_users(split, cfg.val_users, cfg.seed), catalogue, cfg.seed)
    val_off = [val_offsets(list(v.history), list(v.candidates)) for v in val] if val_offsets else None
    val_retrieval = retrieval_ndcg(val, val_off) if val_off else None

    model = _peft_model(lm.model, cfg, model_cfg.load_in_4bit)
    acc = Accelerator(cpu=lm.device == "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    model, opt = acc.prepare(model, opt)

    step, best, history, resumed = 0, (-1.0, 0), [], None
    if start_ckpt is not None:
        state = load_checkpoint(start_ckpt, acc.unwrap_model(model), opt, sched)
        step, resumed = int(state["step"]), int(state["step"])
        best, history = (float(state["best"][0]), int(state["best"][1])), state["history"]
    meta = {
        "train_config": json.loads(cfg.model_dump_json()), "agent_config": json.loads(agent_cfg.model_dump_json()),
        "template_version": template_version(agent_cfg.prompt), "data_hash": digest, "base_model": lm.model_id,
        "dataset_sha256": agent.dataset.sha256, "n_examples": len(examples), "distill_scale": teacher,
    }  # fmt: skip
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "run.json").write_text(json.dumps(meta, indent=1, default=str))
    log = (cfg.output_dir / "train_log.jsonl").open("a", encoding="utf-8")
    pad = lm.tokenizer.pad_token_id
    train_s, samples, loss_val = 0.0, 0, None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while step < cfg.max_steps:
        model.train()
        t0 = time.perf_counter()
        total = 0.0
        for micro in range(cfg.grad_accum):
            batch = collate([encoded[i] for i in _batch_indices(step * cfg.grad_accum + micro, len(encoded), cfg)], pad)
            loss, parts = batch_loss(model, batch, cfg, lm.device, teacher)
            if not torch.isfinite(loss):
                raise TrainError(f"loss is {loss.item()} at step {step + 1}; lower `lr` (now {cfg.lr})")
            acc.backward(loss / cfg.grad_accum)
            total += loss.item() / cfg.grad_accum
            samples += len(batch["input_ids"])
        acc.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - t0
        step, loss_val = step + 1, total
        log.write(json.dumps({"step": step, "loss": total, **parts, "lr": sched.get_last_lr()[0]}) + "\n")
        note("training", step, cfg.max_steps, {"loss": total})
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            ndcg, temp = validate(model, prompter, val, agent.items, cfg, lm.device, val_off)
            history.append({"step": step, "val_ndcg10": ndcg, "score_temperature": temp, "loss": total})
            if val_retrieval is not None:  # the bar the LM must clear: retrieval's own order on these lists
                history[-1]["val_ndcg10_retrieval"] = val_retrieval
            log.write(json.dumps(history[-1]) + "\n")
            note("validation", step, cfg.max_steps, {"val_ndcg10": ndcg})
            if ndcg > best[0]:
                best = (ndcg, step)
                adapter_meta = {**meta, "step": step, "val_ndcg10": ndcg, "score_temperature": temp}
                save_adapter(acc.unwrap_model(model), cfg.output_dir / "adapter", adapter_meta)
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            state = {"best": list(best), "history": history, "data_hash": digest}
            save_checkpoint(cfg.output_dir, step, acc.unwrap_model(model), opt, sched, state, cfg.keep_checkpoints)
        log.flush()
    log.close()
    result = TrainResult(
        output_dir=str(cfg.output_dir), adapter_dir=str(cfg.output_dir / "adapter"), steps=step, best_step=best[1],
        best_val_ndcg10=best[0], val_history=history, resumed_from_step=resumed, n_examples=len(examples),
        n_rank_examples=sum(e.kind == "rank" for e in examples), data_hash=digest,
        template_version=meta["template_version"], base_model=lm.model_id, device=lm.device, dtype=lm.dtype,
        qlora=model_cfg.load_in_4bit,
        train_seconds=train_s, samples_per_s=samples / max(train_s, 1e-9), peak_memory_gb=_peak_memory_gb(),
        final_loss=loss_val, distill_scale=teacher,
    )  # fmt: skip
    (cfg.output_dir / "train_result.json").write_text(result.model_dump_json(indent=1))
    return result


def batch_loss(
    model: Any, batch: dict[str, Any], cfg: TrainConfig, device: str, teacher_scale: float | None = None
) -> tuple[Any, dict[str, float]]:
    """Weighted label loss + answer-token loss for one collated batch.

    `teacher_scale`: with `cfg.distill_weight` > 0, the retrieval teacher's sharpness (finetune/distill.py).

    Only the last `n_keep` positions get logits (`logits_to_keep`): the full-vocabulary head over a
    500-token prompt would cost more memory than the rest of a small model's step.
    """
    import torch.nn.functional as F

    out = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        position_ids=batch["position_ids"].to(device),
        logits_to_keep=batch["n_keep"],
        use_cache=False,
    )
    logits = out.logits.float()
    n = batch["n_keep"] - 1
    targets = batch["input_ids"][:, -n:].to(device)
    mask = batch["answer_mask"].to(device)
    lm_loss = F.cross_entropy(logits[:, :-1][mask], targets[mask])
    loss, parts = cfg.lm_loss_weight * lm_loss, {"lm_loss": lm_loss.item()}
    rows = batch["rank_rows"].to(device)
    if len(rows) and cfg.rank_loss_weight > 0:
        at = logits[rows, batch["label_pos"].to(device)]  # [R, vocab]: the distribution after "["
        labels = at.gather(1, batch["label_ids"].to(device))
        if cfg.retrieval_offset:  # fixed, no gradient: the LM learns the residual (finetune/offsets.py)
            labels = labels + cfg.retrieval_offset * batch["offsets"].to(device)
        rank_loss = F.cross_entropy(labels, batch["target"].to(device))
        parts["rank_loss"] = rank_loss.item()
        if cfg.distill_weight:
            if teacher_scale is None:
                raise ConfigError("distill_weight > 0 needs the teacher's scale (finetune/distill.teacher_scale)")
            kl = distill.distill_loss(labels, batch["offsets"].to(device), teacher_scale)
            rank_loss = (1 - cfg.distill_weight) * rank_loss + cfg.distill_weight * kl
            parts["distill_kl"] = kl.item()
        loss = loss + cfg.rank_loss_weight * rank_loss
    return loss, parts


def _offset_fns(agent: Any, split: Any, cfg: TrainConfig) -> tuple[Any, Any]:
    """(training, validation) functions giving each candidate's fused retrieval score (finetune/offsets.py), for
    the offset and the distillation teacher; (None, None) when the run uses neither."""
    if not (cfg.retrieval_offset or cfg.distill_weight):
        return None, None
    from reasonrec.finetune.offsets import list_offsets, offset_sources

    train_src, val_src, notes = offset_sources(agent, split, cfg.positions_per_user)
    for line in notes:  # e.g. no cached sequence model for these sequences: the offset goes without it
        logging.getLogger(__name__).warning("retrieval offset: %s", line)
    return (lambda h, c: list_offsets(train_src, h, c)), (lambda h, c: list_offsets(val_src, h, c))


def _model_config(cfg: TrainConfig, agent_cfg: Any) -> Any:
    import torch

    # The agent config's model section is the base; a TrainConfig field overrides it only when set.
    overrides = {"device": cfg.device, "dtype": cfg.dtype, "num_threads": cfg.num_threads, "name_or_path": cfg.model}
    m = agent_cfg.model.model_copy(
        update={"adapter": None, "merge_adapter": False, **{k: v for k, v in overrides.items() if v is not None}}
    )
    cuda = m.device.startswith("cuda") or (m.device == "auto" and torch.cuda.is_available())
    if cfg.qlora == "on" and not cuda:
        raise ConfigError("`qlora` is 'on' but CUDA is not available; use qlora='auto' or 'off' on CPU")
    m.load_in_4bit = cfg.qlora == "on" or (cfg.qlora == "auto" and cuda)
    return m


def _peft_model(base: Any, cfg: TrainConfig, quantized: bool) -> Any:
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        base.gradient_checkpointing_enable()
        base.enable_input_require_grads()
    try:
        return get_peft_model(base, cfg.lora_config())
    except ValueError as e:  # e.g. target modules that this architecture does not have
        raise ConfigError(f"cannot attach LoRA: {e} (check `target_modules`)") from e


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        done = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    return f


def _batch_indices(g: int, n: int, cfg: TrainConfig) -> list[int]:
    """Examples of global micro-batch `g`: a seeded shuffle per epoch, so a resumed run sees the same."""
    import numpy as np

    per_epoch = max(1, n // cfg.batch_size)
    epoch, b = divmod(g, per_epoch)
    order = np.random.default_rng(cfg.seed * 1_000_003 + epoch).permutation(n)
    return [int(i) for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]


def _check_resume(cfg: TrainConfig, digest: str) -> Path | None:
    """The checkpoint to resume from, or None; refuses to mix two different runs in one folder."""
    found = checkpoints(cfg.output_dir)
    run = cfg.output_dir / "run.json"
    if not found:
        return None
    if run.is_file():
        before = json.loads(run.read_text())
        old = {k: v for k, v in before["train_config"].items() if k not in _RESUME_KEYS_FREE}
        new = {k: v for k, v in json.loads(cfg.model_dump_json()).items() if k not in _RESUME_KEYS_FREE}
        # A key the old run.json lacks is a field added since: that run trained with its default.
        defaults = {k: f.default for k, f in TrainConfig.model_fields.items() if f.default_factory is None}
        changed = sorted(k for k in new if old.get(k, defaults.get(k)) != new[k])
        if changed or before.get("data_hash") != digest:
            raise ConfigError(
                f"{cfg.output_dir} holds a run with different settings ({', '.join(changed) or 'training data'}); "
                "use another --output-dir, or delete that folder to start over"
            )
    return found[-1]  # a finished run (step >= max_steps) skips the loop and rebuilds its result


def _peak_memory_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


def main(argv: list[str] | None = None) -> None:
    """`python -m reasonrec.finetune.train` = `reasonrec train` (same options)."""
    from reasonrec.agent.interfaces.cli import main as cli_main

    cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
