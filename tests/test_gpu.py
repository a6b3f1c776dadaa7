"""The 4-bit QLoRA path on a real GPU: nf4 base weights load, rank, and train a LoRA step.

Marked `gpu`: skipped cleanly (conftest) where CUDA is absent, as on CI and the 2-core CPU machines.
"""

from __future__ import annotations

import pytest
from test_finetune import TINY, agent_config_file  # noqa: F401,F811  (the fixture, reused)

pytestmark = pytest.mark.gpu


def test_4bit_model_loads_with_nf4_linears_and_scores():
    import torch

    from reasonrec.agent.config import ModelConfig
    from reasonrec.agent.model.loading import load_model

    lm = load_model(ModelConfig(load_in_4bit=True, device="cuda"))
    kinds = {type(m).__name__ for m in lm.model.modules()}
    assert "Linear4bit" in kinds, kinds  # bitsandbytes nf4 layers, not a silent unquantised load
    enc = lm.tokenizer(["[A] Toy Story"], return_tensors="pt").to("cuda")
    with torch.inference_mode():
        logits = lm.model(**enc).logits
    assert torch.isfinite(logits.float()).all()


def test_qlora_training_step_saves_an_adapter(tmp_path, agent_config_file):  # noqa: F811
    from reasonrec.finetune.config import TrainConfig
    from reasonrec.finetune.train import train

    result = train(TrainConfig(**{**TINY, "qlora": "on", "device": "cuda"}, output_dir=tmp_path / "run",
                               agent_config=agent_config_file))  # fmt: skip
    assert result.qlora and (tmp_path / "run" / "adapter").is_dir()
