"""Model loading: the packaged SmolLM2 conversion, single-token labels (safe-loading rules: test_safe_loading.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reasonrec.agent.config import ModelConfig
from reasonrec.agent.model.labels import label_token_ids
from reasonrec.agent.model.loading import load_model, resolve_model_path
from reasonrec.errors import ModelError


def test_default_model_is_converted_once_to_safetensors(lm):
    path, model_id = resolve_model_path(ModelConfig().name_or_path)
    folder = Path(path)
    assert model_id == "SmolLM2-135M-Instruct"
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin")), "a pickle checkpoint would be unsafe to load"
    t0 = time.perf_counter()
    again = load_model(ModelConfig())  # cached folder: no GGUF de-quantisation
    assert time.perf_counter() - t0 < 15
    assert again.model.config.vocab_size == lm.model.config.vocab_size


@pytest.mark.parametrize(
    "value, message",
    [
        ("./no/such/model", "has no config.json"),
        ("/tmp/definitely-missing.gguf", "does not exist"),
    ],
)
def test_bad_model_paths_are_model_errors(value, message):
    with pytest.raises(ModelError, match=message):
        resolve_model_path(value)


def test_cuda_device_without_cuda_is_a_model_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ModelError, match="CUDA is not available"):
        load_model(ModelConfig(device="cuda"))


def test_labels_are_distinct_single_tokens(lm):
    labels, ids = label_token_ids(lm.tokenizer, 50)
    assert labels[:3] == ["A", "B", "C"]
    assert len(set(labels)) == len(set(ids)) == 50
    for label, tid in zip(labels, ids, strict=True):
        assert lm.tokenizer.encode("[" + label, add_special_tokens=False)[-1] == tid


def test_too_many_labels_is_a_model_error(lm):
    with pytest.raises(ModelError, match="n_candidates"):
        label_token_ids(lm.tokenizer, 100_000)
