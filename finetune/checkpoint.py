"""Checkpoints that survive a kill: adapter + optimizer + scheduler + RNG + position, written atomically.

A checkpoint is a folder `checkpoints/step-000050/` written under a temporary name and renamed when
complete, so a run killed mid-write leaves either the previous checkpoint or the new one, never half
of one. Tensors go to safetensors (adapter) or `torch.save` files loaded back with
`weights_only=True` (optimizer, RNG): no arbitrary unpickling, even of our own files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

_STEP_DIR = re.compile(r"step-(\d{6})")


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def save_checkpoint(output_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any, state: dict, keep: int):
    """Write checkpoint `step` atomically and prune to the newest `keep`."""
    import torch

    root = output_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
    # state.json last: its presence marks the folder as complete (see `checkpoints`)
    (tmp / "state.json").write_text(
        json.dumps({**state, "step": step, "scheduler": scheduler.state_dict()}, indent=1, default=str)
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> dict:
    """Restore adapter weights, optimizer, scheduler and RNG from `path`; returns its state dict."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(state.pop("scheduler"))
    torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True)["torch"])
    return state


def save_adapter(model: Any, folder: Path, meta: dict) -> Path:
    """Save the adapter (safetensors) with what built it, atomically, replacing an older one."""
    tmp = folder.parent / f".tmp-{folder.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "reasonrec_train.json").write_text(json.dumps(meta, indent=1, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
