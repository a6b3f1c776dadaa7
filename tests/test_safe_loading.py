"""Safe loading (issue 7.7): safetensors only, no pickle loads of user files, no remote code unless asked.

The model and adapter files here carry real payloads: a pickle whose unpickling creates a folder (a
stand-in for arbitrary code) and a config whose `auto_map` points at a Python module that does the same
on import. The tests show the payloads work when loaded unsafely, then that reasonrec refuses them with
a `ModelError` and the folder never appears. A static scan keeps unsafe loading out of our own code.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest

from reasonrec.agent.config import ModelConfig
from reasonrec.agent.model.loading import load_model
from reasonrec.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["agent", "retrieval", "prompts", "finetune", "reasonrec"]


class _Payload:
    """Unpickling this runs os.makedirs(marker): what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _evil_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"model.embed_tokens.weight": _Payload(marker)}))


@pytest.fixture(scope="module")
def tiny_folder(tiny_random_lm, tmp_path_factory):
    """A tiny random Llama saved as an HF folder with safetensors: a model reasonrec accepts."""
    folder = tmp_path_factory.mktemp("tiny-safe")
    tiny_random_lm.model.save_pretrained(folder, safe_serialization=True)
    tiny_random_lm.tokenizer.save_pretrained(folder)
    return folder


def _copy_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if not f.name.endswith(".safetensors"):
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_the_payload_is_real(tmp_path):
    marker = tmp_path / "pwned"
    _evil_pickle(tmp_path / "x.bin", marker)
    pickle.loads((tmp_path / "x.bin").read_bytes())  # what an unsafe loader would do
    assert marker.is_dir()


def test_safetensors_folder_loads(tiny_folder):
    lm = load_model(ModelConfig(name_or_path=str(tiny_folder), device="cpu", dtype="float32"))
    assert lm.model.config.num_hidden_layers == 2 and lm.model_id == tiny_folder.name


def test_pickle_only_model_folder_is_refused(tiny_folder, tmp_path):
    folder = _copy_without_weights(tiny_folder, tmp_path / "pickled-model")
    marker = tmp_path / "pwned-by-model"
    _evil_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(ModelError, match="cannot load model .*pickled-model") as e:
        load_model(ModelConfig(name_or_path=str(folder), device="cpu"))
    assert "safetensors" in str(e.value)  # says what is missing
    assert not marker.exists()


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({}, "has no adapter_config.json"),
        ({"adapter_config.json": "{}"}, "has no adapter_model.safetensors"),
        ({"adapter_config.json": "{}", "adapter_model.bin": None}, r"only safetensors are loaded"),
    ],
    ids=["empty-folder", "no-weights", "pickle-weights"],
)
def test_adapter_without_safetensors_is_refused(tiny_folder, tmp_path, files, match):
    adapter, marker = tmp_path / "adapter", tmp_path / "pwned-by-adapter"
    adapter.mkdir()
    for name, text in files.items():
        if text is None:
            _evil_pickle(adapter / name, marker)
        else:
            (adapter / name).write_text(text)
    with pytest.raises(ModelError, match=match):
        load_model(ModelConfig(name_or_path=str(tiny_folder), adapter=str(adapter), device="cpu"))
    assert not marker.exists()


@pytest.fixture
def remote_code_folder(tiny_folder, tmp_path):
    """The tiny model with `auto_map` pointing at its own Python module, which leaves a marker on import."""
    folder = _copy_without_weights(tiny_folder, tmp_path / f"remote-code-{os.getpid()}-{tmp_path.name}")
    (folder / "model.safetensors").write_bytes((tiny_folder / "model.safetensors").read_bytes())
    marker = tmp_path / "remote-code-ran"
    (folder / "evil_llama.py").write_text(
        "import os\n"
        f"os.makedirs({str(marker)!r}, exist_ok=True)\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n\n\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil_llama'\n\n\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    # An architecture transformers does not know, so only the folder's own code can build it.
    config["model_type"] = "evil_llama"
    config["auto_map"] = {"AutoConfig": "evil_llama.EvilConfig", "AutoModelForCausalLM": "evil_llama.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_remote_code_is_off_by_default(remote_code_folder):
    folder, marker = remote_code_folder
    assert ModelConfig().trust_remote_code is False
    with pytest.raises(ModelError, match="trust_remote_code"):
        load_model(ModelConfig(name_or_path=str(folder), device="cpu"))
    assert not marker.exists()


def test_trust_remote_code_is_passed_through_when_asked(remote_code_folder):
    folder, marker = remote_code_folder
    try:
        load_model(ModelConfig(name_or_path=str(folder), device="cpu", trust_remote_code=True))
    except ModelError:
        pass  # whether the custom class then loads is transformers' business; the switch reached it
    assert marker.is_dir()  # the folder's own code ran: the user's opt-in was honoured


# --- our own code: no unsafe loaders -------------------------------------------------------------------

_FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"{where}: imports {n}" for n in names if n.split(".")[0] in _FORBIDDEN_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        is_true = lambda v: isinstance(v, ast.Constant) and v.value is True  # noqa: E731
        is_false = lambda v: isinstance(v, ast.Constant) and v.value is False  # noqa: E731
        if func.endswith("torch.load") or func == "load" and "weights_only" in kw:
            if not is_true(kw.get("weights_only")):
                out.append(f"{where}: {func}() without weights_only=True")
        if is_true(kw.get("trust_remote_code")):
            out.append(f"{where}: trust_remote_code=True hard-coded")
        if is_false(kw.get("use_safetensors")) or is_false(kw.get("safe_serialization")):
            out.append(f"{where}: pickle serialisation requested")
        if is_true(kw.get("allow_pickle")):
            out.append(f"{where}: allow_pickle=True")
        if func in {"yaml.load", "yaml.unsafe_load", "yaml.full_load"}:
            out.append(f"{where}: {func}() (use yaml.safe_load)")
    return out


def test_no_unsafe_loading_in_our_code():
    files = [f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 20
    problems = [p for f in files for p in _problems(f)]
    assert problems == []


def test_the_scan_catches_unsafe_code(tmp_path, monkeypatch):
    bad = ROOT / "tests" / f".unsafe_probe_{os.getpid()}.py"
    bad.write_text(
        "import pickle\nimport torch\nimport yaml\n"
        "torch.load('x.pt')\ntorch.load('y.pt', weights_only=False)\n"
        "m.from_pretrained('z', trust_remote_code=True, use_safetensors=False)\nyaml.load(open('c'))\n"
    )
    try:
        found = _problems(bad)
    finally:
        bad.unlink()
    assert len(found) == 6, found
