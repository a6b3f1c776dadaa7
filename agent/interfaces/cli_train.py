"""`reasonrec train`: fine-tune a LoRA adapter (QLoRA on CUDA) with progress, checkpoints and resume;
`reasonrec calibrate`: fit the scoring softmax temperature of a model or adapter.

Registered on the main CLI app in `reasonrec.agent.interfaces.cli`; `python -m reasonrec.finetune.train` runs it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from reasonrec.agent.interfaces.cli_common import console, err_console


def train(
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Run folder, re-run to resume (default: the config's).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON TrainConfig file.")] = None,
    agent_config: Annotated[
        Path | None, typer.Option("--agent-config", help="YAML/JSON AgentConfig (model, prompt, retrieval).")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="HF id, local folder or .gguf.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per forward pass.")] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Forward passes per optimizer step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    train_users: Annotated[int | None, typer.Option(help="Seeded subset of users for training data.")] = None,
    positions_per_user: Annotated[int | None, typer.Option(help="Training targets per user.")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    qlora: Annotated[str | None, typer.Option(help="auto (on with CUDA), on, off.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Validation every N steps.")] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    val_users: Annotated[int | None, typer.Option(help="Users in the validation NDCG@10.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for data and order.")] = None,
) -> None:
    """Fine-tune the ranking LM on interactions; the best adapter lands in <output-dir>/adapter.

    Example: reasonrec train --output-dir runs/lora --max-steps 300 && reasonrec evaluate --protocol cand20
    --methods reasonrec-lora-scoring --adapter runs/lora/adapter
    """
    from reasonrec.finetune.config import TrainConfig
    from reasonrec.finetune.train import train as run_training

    flags: dict[str, Any] = {
        "output_dir": output_dir, "agent_config": agent_config, "model": model, "max_steps": max_steps,
        "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr, "train_users": train_users,
        "positions_per_user": positions_per_user, "lora_r": lora_r, "qlora": qlora, "eval_every": eval_every,
        "save_every": save_every, "val_users": val_users, "seed": seed,
    }  # fmt: skip
    flags = {k: v for k, v in flags.items() if v is not None}
    cfg = TrainConfig.from_file(config, **flags) if config else TrainConfig.build(**flags)
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
    )  # fmt: skip
    with Progress(*columns, console=err_console) as bar:
        tasks: dict[str, Any] = {}

        def cb(stage: str, done: int, total: int, figures: dict) -> None:
            key = "training" if stage == "validation" else stage
            if key not in tasks:
                tasks[key] = bar.add_task(key, total=total, info="")
            info = " ".join(f"{k} {v:.4f}" for k, v in figures.items())
            bar.update(tasks[key], completed=done, total=total, info=info)

        result = run_training(cfg, progress=cb)
    console.print(
        f"adapter: {result.adapter_dir} (best val NDCG@10 {result.best_val_ndcg10:.4f} at step {result.best_step}"
        f" of {result.steps}) · {result.samples_per_s:.2f} samples/s · peak {result.peak_memory_gb:.2f} GB"
        + (f" · resumed from step {result.resumed_from_step}" if result.resumed_from_step else "")
    )


def calibrate_cmd(
    adapter: Annotated[str | None, typer.Option(help="Adapter folder: T is written into it.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON AgentConfig file.")] = None,
    users: Annotated[int, typer.Option(help="Validation lists to fit on.")] = 200,
    seed: Annotated[int, typer.Option(help="Seeds the users and the negatives.")] = 0,
    fusion: Annotated[
        bool, typer.Option("--fusion", help="Fit candidates.lm_weight / retrieval_weight on fused validation lists.")
    ] = False,
) -> None:
    """Fit the softmax temperature that calibrates scoring-mode probabilities on validation items.

    Example: reasonrec calibrate --adapter runs/lora/adapter   (base model: put the printed value in
    ranker.score_temperature)
    """
    from reasonrec.agent.config import AgentConfig
    from reasonrec.finetune.calibrate import calibrate

    cfg = AgentConfig.from_file(config) if config else AgentConfig()
    if adapter:
        cfg.model.adapter = adapter
    if fusion:
        from reasonrec.finetune.fusion_fit import fit_fusion

        with err_console.status("fitting the fusion weights on validation lists (trains the sources once)…"):
            f = fit_fusion(cfg, users=users, seed=seed)
        console.print(
            f"{f.lists} of {f.users} validation lists hold the validation item · NDCG@10 retrieval fusion "
            f"{f.ndcg10_fusion:.4f}, LM alone {f.ndcg10_lm:.4f}, fused {f.ndcg10_fused:.4f}"
        )
        console.print(f"candidates:\n  lm_weight: {f.lm_weight:.4f}\n  retrieval_weight: {f.retrieval_weight:.4f}")
        return
    r = calibrate(cfg, users=users, seed=seed)
    console.print(
        f"{r.model_id}: T = {r.score_temperature:.3f} on {r.users} validation lists · ECE {r.ece_before:.3f} -> "
        f"{r.ece_after:.3f} · mean top-1 probability {r.mean_top1_prob_before:.3f} -> {r.mean_top1_prob_after:.3f}"
        f" (hit rate {r.hr1:.3f})"
    )
    console.print(
        f"written to {r.written_to}" if r.written_to else f"set ranker.score_temperature: {r.score_temperature:.3f}"
    )
