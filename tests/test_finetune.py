"""Fine-tuning: training data without leakage, the loss only on answer tokens, real SmolLM2 steps on CPU,
the saved adapter loaded by the agent, and a run killed mid-way that resumes to the same final step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reasonrec.errors import ConfigError
from reasonrec.finetune.config import TrainConfig

# Small enough for a CPU test (prompts of ~250 tokens), same code path as a real run.
TINY = dict(
    train_users=4, positions_per_user=1, n_candidates=8, k=3, reason_share=0.5, max_steps=2, batch_size=2,
    grad_accum=1, val_users=4, eval_every=2, save_every=1, warmup_steps=0,
)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 30, "n_candidates": 20}, "`k` must be <= n_candidates"),
        ({"lora_r": 0}, "`lora_r` must be >= 1"),
        ({"retrieved_share": 1.5}, "`retrieved_share` must be between 0 and 1"),
        ({"lr": 0}, "`lr` must be > 0"),
        ({"rank_loss_weight": 0, "lm_loss_weight": 0}, "nothing would be learned"),
        ({"qlora": "maybe"}, "qlora"),
        ({"lora_rr": 8}, "unknown option"),
    ],
)
def test_bad_train_config_is_one_clear_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.build(**kwargs)


@pytest.fixture(scope="module")
def agent_config_file(tmp_path_factory, indexed_store_dir):
    """An AgentConfig pointing at the session's indexed store, for train() and its subprocesses."""
    path = tmp_path_factory.mktemp("cfg") / "agent.json"
    path.write_text(json.dumps({"retrieval": {"persist_dir": str(indexed_store_dir), "collection": "ml-100k-test"}}))
    return path


@pytest.fixture(scope="module")
def examples(agent, ml100k):
    from reasonrec.agent.ranking.prompter import Prompter
    from reasonrec.finetune.data import build_examples
    from reasonrec.finetune.evaluation.baselines import ItemKNNRanker
    from reasonrec.finetune.evaluation.split import leave_one_out
    from reasonrec.retrieval.types import natural_key

    split = leave_one_out(ml100k)
    knn = ItemKNNRanker(split, sorted(ml100k.items, key=natural_key))
    cfg = TrainConfig(train_users=6, positions_per_user=3, reason_share=0.5)
    prompter = Prompter(agent.model, agent.config)
    return split, cfg, build_examples(agent, split, cfg, knn, prompter), (agent, knn, prompter)


def test_examples_use_only_train_items_and_the_serving_prompt(examples, ml100k):
    from reasonrec.agent.ranking.request import RankRequest

    split, cfg, exs, (agent, _, prompter) = examples
    ranks = [e for e in exs if e.kind == "rank"]
    assert len(ranks) == 6 * 3 and any(e.kind == "reason" for e in exs)
    for e in ranks:
        s = split.get(e.user)
        label_to_token = dict(zip(*_labels(agent, cfg.n_candidates), strict=True))
        token_to_label = {t: lab for lab, t in label_to_token.items()}
        labels = [token_to_label[t] for t in e.label_ids]
        # the prompt lists candidates as "[label] Title": recover the item of each label from the prompt
        listed = {lab: line.split("] ", 1)[1] for line in e.prompt.splitlines() for lab in labels
                  if line.startswith(f"[{lab}] ")}  # fmt: skip
        assert len(listed) == cfg.n_candidates
        target_label = labels[e.target]
        assert e.answer.startswith(f"{target_label}] ")
        target_title = listed[target_label]
        # the target is a train item (never the validation or test item) ...
        train_titles = {ml100k.items[i].title for i in s.train}
        assert any(target_title.startswith(t) for t in train_titles)
        held_out = {ml100k.items[s.valid].title, ml100k.items[s.test].title} - train_titles
        assert not any(target_title.startswith(t) for t in held_out)
        # ... and exactly k answer lines, distinct labels, all among the candidates
        picked = [line.split("]")[0].lstrip("[") for line in e.answer.strip().splitlines()]
        assert len(picked) == cfg.k and len(set(picked)) == cfg.k and set(picked) <= set(labels)
    # the prompt is byte-identical to what the serving ranker renders for the same request
    e = ranks[0]
    s = split.get(e.user)
    j = len(s.train) - cfg.positions_per_user
    hist = [ml100k.items[i] for i in s.train[:j]]
    text, _ = prompter.prompt_text(RankRequest(hist, [ml100k.items[s.train[j]]], k=1))
    assert e.prompt.split("Candidates:")[0] == text.split("Candidates:")[0]


def _labels(agent, n):
    from reasonrec.agent.model.labels import label_token_ids

    return label_token_ids(agent.model.tokenizer, n)


def test_examples_are_deterministic_and_hashed(examples, agent):
    from reasonrec.finetune.data import build_examples, data_hash

    split, cfg, exs, (_, knn, prompter) = examples
    again = build_examples(agent, split, cfg, knn, prompter)
    assert data_hash(again) == data_hash(exs)
    other = build_examples(agent, split, cfg.model_copy(update={"seed": 1}), knn, prompter)
    assert data_hash(other) != data_hash(exs)


def test_target_positions_spread_over_the_list(agent, ml100k):
    """Shuffled candidates: the true item's label is not stuck at one position (position bias)."""
    from reasonrec.agent.ranking.prompter import Prompter
    from reasonrec.finetune.data import build_examples
    from reasonrec.finetune.evaluation.baselines import ItemKNNRanker
    from reasonrec.finetune.evaluation.split import leave_one_out
    from reasonrec.retrieval.types import natural_key

    split = leave_one_out(ml100k)
    knn = ItemKNNRanker(split, sorted(ml100k.items, key=natural_key))
    cfg = TrainConfig(train_users=40, positions_per_user=1, reason_share=0.0)
    exs = build_examples(agent, split, cfg, knn, Prompter(agent.model, agent.config))
    positions = [e.target for e in exs]
    assert len(set(positions)) >= 10, positions


def test_loss_mask_covers_exactly_the_answer(examples, agent):
    from reasonrec.finetune.data import collate, encode

    _, _, exs, _ = examples
    tok = agent.model.tokenizer
    enc = encode(exs[:4], tok)
    batch = collate(enc, tok.pad_token_id)
    n = batch["n_keep"] - 1
    for r, e in enumerate(enc):
        assert int(batch["answer_mask"][r].sum()) == e.n_answer
        answer_ids = batch["input_ids"][r, -n:][batch["answer_mask"][r]].tolist()
        assert answer_ids == e.ids[-e.n_answer :]
        assert answer_ids[-1] == tok.eos_token_id
    for i, r in enumerate(batch["rank_rows"].tolist()):
        e = enc[r]
        first = batch["input_ids"][r, -n:][batch["label_pos"][i]]  # predicted by kept logit label_pos
        assert int(first) == e.label_ids[e.target] == e.ids[-e.n_answer]


@pytest.mark.slow
def test_real_training_steps_save_an_adapter_the_agent_loads(tmp_path, agent_config_file, ml100k, lm):
    from safetensors.torch import load_file

    from reasonrec.agent.api import RecommenderAgent
    from reasonrec.agent.config import AgentConfig
    from reasonrec.finetune.train import train
    from reasonrec.prompts.loader import TEMPLATE_VERSION

    cfg = TrainConfig(output_dir=tmp_path / "run", agent_config=agent_config_file, **TINY)
    result = train(cfg)
    assert result.steps == 2 and result.n_rank_examples == 4 and result.samples_per_s > 0
    adapter = tmp_path / "run" / "adapter"
    meta = json.loads((adapter / "reasonrec_train.json").read_text())
    assert meta["template_version"] == TEMPLATE_VERSION and meta["data_hash"] == result.data_hash
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # B starts at 0: it learned
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r and "val_ndcg10" not in r] == [1, 2]
    assert 0.0 <= result.best_val_ndcg10 <= 1.0
    cfg_agent = AgentConfig.from_file(agent_config_file)
    cfg_agent.model.adapter = str(adapter)
    cfg_agent.ranker.mode = "scoring"
    tuned = RecommenderAgent(cfg_agent, dataset=ml100k)
    recs = tuned.recommend(user_id="196", k=3)
    assert recs.model_id.endswith("+adapter") and len(recs.item_ids()) == 3
    # the softmax temperature fitted on the validation lists travels with the adapter and is used
    assert 0.1 <= meta["score_temperature"] <= 100 and tuned.model.score_temperature == meta["score_temperature"]
    assert tuned.ranker.temperature == meta["score_temperature"]
    # `reasonrec calibrate` refits it on other validation lists and writes it into the adapter
    from reasonrec.finetune.calibrate import calibrate

    cal = calibrate(cfg_agent, users=6, seed=1)
    assert cal.users == 6 and cal.written_to == str(adapter / "reasonrec_train.json")
    assert 0 <= cal.ece_after <= 1 and 0 <= cal.ece_before <= 1 and 0.1 <= cal.score_temperature <= 100
    after = json.loads((adapter / "reasonrec_train.json").read_text())
    assert after["score_temperature"] == cal.score_temperature and after["data_hash"] == meta["data_hash"]
    # a second run into the same folder with other settings is refused, not mixed
    with pytest.raises(ConfigError, match="different settings"):
        train(cfg.model_copy(update={"lora_r": 4}))


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_final_step(tmp_path, agent_config_file):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "reasonrec.finetune.train", "-o", str(out), "--agent-config", str(agent_config_file)]
    cfg = TrainConfig(**{**TINY, "max_steps": 4})
    (tmp_path / "train.json").write_text(cfg.model_dump_json(exclude={"output_dir", "agent_config"}))
    args += ["--config", str(tmp_path / "train.json")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "step-000002" / "state.json").is_file():
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the next run must cope
    proc.wait()
    done = json.loads((out / "checkpoints" / "step-000002" / "state.json").read_text())["step"]
    assert not (out / "train_result.json").exists() and done == 2
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = json.loads((out / "train_result.json").read_text())
    assert result["steps"] == 4 and result["resumed_from_step"] >= 2
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert max(steps) == 4 and f"resumed from step {result['resumed_from_step']}" in " ".join(rerun.stdout.split())


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    import torch

    from reasonrec.finetune.validation import fit_temperature

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 20, generator=g) * 3
    targets = torch.multinomial(torch.softmax(logits / 2.0, dim=-1), 1, generator=g).squeeze(1)
    assert fit_temperature(logits, targets) == pytest.approx(2.0, rel=0.15)
    assert fit_temperature(logits, logits.argmax(-1)) <= 0.2  # always right: sharpen as far as the grid goes
