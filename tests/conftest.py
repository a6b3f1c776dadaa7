"""Shared test setup: offline, a private REASONREC_HOME, and session-scoped real components.

Why env at import time: HF_HUB_OFFLINE must be set before transformers is imported anywhere, or a
missing file costs ~70 s of network retries on this machine.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Converted models are cached across runs (CI reuses ~/.cache between tests of one run); everything
# else a test writes goes to a temp dir.
os.environ.setdefault("REASONREC_MODELS", os.path.expanduser("~/.cache/reasonrec/models"))
os.environ.setdefault("REASONREC_HOME", tempfile.mkdtemp(prefix="reasonrec-test-"))

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="needs CUDA (gpu marker)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


# --- retrieval fixtures ---


@pytest.fixture(scope="session")
def ml100k():
    """The real MovieLens-100K rows shipped in the installed recbole package."""
    from reasonrec.retrieval import load_ml100k

    return load_ml100k()


@pytest.fixture(scope="session")
def embedder():
    """The packaged all-MiniLM-L6-v2, loaded once per session (shared through the model cache)."""
    from reasonrec.retrieval import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def retrieval_config(tmp_path_factory):
    """A RetrievalConfig whose embedded Chroma store lives in a session temp dir."""
    from reasonrec.retrieval import RetrievalConfig

    return RetrievalConfig(persist_dir=tmp_path_factory.mktemp("chroma"), collection="ml-100k-test")


@pytest.fixture(scope="session")
def indexed_store(ml100k, embedder, retrieval_config):
    """The whole ML-100K catalogue indexed once per session. Tests must not modify it."""
    from reasonrec.retrieval import build_index

    store, report = build_index(ml100k, retrieval_config, embedder=embedder)
    assert report.added == len(ml100k.items)
    return store


@pytest.fixture(scope="session")
def indexed_store_dir(indexed_store, retrieval_config):
    """Folder of the session's indexed store (for CLI subprocesses via --store)."""
    return retrieval_config.resolved_persist_dir()


# --- agent fixtures ---


@pytest.fixture(scope="session")
def lm():
    """The real SmolLM2-135M-Instruct, converted once into the shared model cache."""
    from reasonrec.agent.config import ModelConfig
    from reasonrec.agent.model.loading import load_model

    return load_model(ModelConfig())


@pytest.fixture(scope="session")
def agent(ml100k, lm, indexed_store, retrieval_config):
    """A RecommenderAgent on ML-100K sharing the session's model and indexed store."""
    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig

    return RecommenderAgent(AgentConfig(retrieval=retrieval_config), dataset=ml100k, model=lm)


@pytest.fixture(scope="session")
def tiny_random_lm(lm):
    """A 2-layer random-weight Llama with SmolLM2's tokenizer: fast, and writes noise."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from reasonrec.agent.model.loading import LoadedModel

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(lm.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=lm.tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    return LoadedModel(model, lm.tokenizer, "tiny-random-llama", "cpu", "float32")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on a free local port; skipped where the CLI is not installed."""
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(exe).is_file():
        pytest.skip("the `chroma` CLI is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path_factory.mktemp("chroma-server")
    proc = subprocess.Popen(
        [exe, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.skip("`chroma run` did not start within 10 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
