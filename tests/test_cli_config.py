"""A value set in `--config` is used unless its flag is given, for every command.

Each test stops the command right after it has built its configuration (the stand-in agent or runner
raises `_Built`), so nothing heavy runs: what is under test is only which value wins.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reasonrec.agent.interfaces import cli, cli_chat, cli_common, cli_serve

runner = CliRunner()


class _Built(Exception):
    def __init__(self, value: object):
        self.value = value


def _raise(value: object) -> None:
    raise _Built(value)


def _run(args: list[str]) -> object:
    result = runner.invoke(cli.app, args)
    assert isinstance(result.exception, _Built), (result.output, result.exception)
    return result.exception.value


@pytest.fixture
def agent_yaml(tmp_path: Path) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(yaml.safe_dump({"ranker": {"k": 7, "mode": "scoring", "batch_size": 3}, "dataset": "ml-100k"}))
    return p


class _Agent:
    """Stands in for RecommenderAgent: records the config and the k `recommend` was asked for."""

    def __init__(self, cfg: object):
        self.config = cfg

    def recommend(self, **kw: object) -> None:
        k = kw["k"] if kw["k"] is not None else self.config.ranker.k  # what RecommenderAgent._check_k does
        _raise((self.config, k))


def test_recommend_uses_the_config_k_unless_the_flag_is_given(monkeypatch, agent_yaml):
    monkeypatch.setattr(cli, "make_agent", _Agent)
    cfg, k = _run(["recommend", "--user", "196", "--config", str(agent_yaml)])
    assert (k, cfg.ranker.mode) == (7, "scoring")
    _, k = _run(["recommend", "--user", "196", "--config", str(agent_yaml), "-k", "2"])
    assert k == 2


@pytest.mark.parametrize("command", [["index"], ["demo"]])
def test_index_and_demo_use_the_config_file(monkeypatch, agent_yaml, tmp_path, command):
    monkeypatch.setattr(cli, "make_agent", _raise)
    cfg = _run([*command, "--config", str(agent_yaml)])
    assert cfg.ranker.k == 7 and cfg.ranker.mode == "scoring"
    cfg = _run([*command, "--config", str(agent_yaml), "--store", str(tmp_path / "s")])
    assert cfg.retrieval.persist_dir == tmp_path / "s" and cfg.ranker.k == 7


@pytest.mark.parametrize("module,command", [(cli_common, "chat"), (cli_serve, "serve")])
def test_chat_and_serve_keep_the_config_mode_unless_given(monkeypatch, agent_yaml, module, command):
    monkeypatch.setattr(module, "make_agent", _raise)
    assert _run([command, "--config", str(agent_yaml)]).ranker.mode == "scoring"
    assert _run([command, "--config", str(agent_yaml), "--mode", "hybrid"]).ranker.mode == "hybrid"
    assert cli_chat.chat is not None  # the chat command is registered from cli_chat


def test_evaluate_batch_size_comes_from_the_agent_config_unless_given(monkeypatch, agent_yaml):
    from reasonrec.agent.config import AgentConfig
    from reasonrec.finetune.evaluation import baselines, run

    monkeypatch.setattr(run, "evaluate", lambda cfg, progress=None: _raise(cfg))
    ev = _run(["evaluate", "--protocol", "cand20", "--config", str(agent_yaml)])
    assert ev.batch_size is None
    assert _run(["evaluate", "--protocol", "cand20", "--config", str(agent_yaml), "--batch-size", "5"]).batch_size == 5

    agent_cfg = AgentConfig.from_file(agent_yaml)

    class _DatasetOwner:
        dataset = None
        candidate_source = None  # the evaluation's split source; None: the agent builds its own

    def built(batch_size):
        agent, _ = baselines.build_ranker(
            "reasonrec-zeroshot-scoring", "cand20", None, _DatasetOwner(), agent_cfg, batch_size=batch_size
        )
        return agent.config.ranker.batch_size

    assert built(None) == 3  # the agent config's value
    assert built(5) == 5


def test_train_output_dir_and_model_settings_come_from_the_configs(monkeypatch, tmp_path):
    from reasonrec.agent.config import AgentConfig
    from reasonrec.finetune import train as train_mod
    from reasonrec.finetune.config import TrainConfig

    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "from-config"), "max_steps": 9}))
    monkeypatch.setattr(train_mod, "train", lambda cfg, progress=None: _raise(cfg))
    cfg = _run(["train", "--config", str(train_yaml)])
    assert cfg.output_dir == tmp_path / "from-config" and cfg.max_steps == 9
    cfg = _run(["train", "--config", str(train_yaml), "-o", str(tmp_path / "flag")])
    assert cfg.output_dir == tmp_path / "flag" and cfg.max_steps == 9

    # The agent config's device / dtype / threads survive a training run unless TrainConfig sets them.
    agent_cfg = AgentConfig.build(model={"device": "cpu", "dtype": "float32", "num_threads": 1})
    m = train_mod._model_config(TrainConfig.build(qlora="off"), agent_cfg)
    assert (m.device, m.dtype, m.num_threads) == ("cpu", "float32", 1)
    m = train_mod._model_config(TrainConfig.build(qlora="off", dtype="bfloat16", num_threads=2), agent_cfg)
    assert (m.device, m.dtype, m.num_threads) == ("cpu", "bfloat16", 2)


def test_calibrate_uses_the_config_adapter_unless_given(monkeypatch, tmp_path):
    from reasonrec.finetune import calibrate as calibrate_mod

    p = tmp_path / "agent.yaml"
    p.write_text(yaml.safe_dump({"model": {"adapter": "runs/from-config"}}))
    monkeypatch.setattr(calibrate_mod, "calibrate", lambda cfg, users, seed: _raise(cfg))
    assert _run(["calibrate", "--config", str(p)]).model.adapter == "runs/from-config"
    assert _run(["calibrate", "--config", str(p), "--adapter", "runs/flag"]).model.adapter == "runs/flag"
