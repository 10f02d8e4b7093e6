"""The shipped RL, accelerate and DeepSpeed configs load and validate; bad RL configs fail early."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from videor1.config import ConfigError, load_config
from videor1.rl.config import RLConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["rl_demo_cpu.yaml", "rl_qwen25vl7b_tgrpo.yaml"])
def test_rl_configs_load_and_validate(name):
    cfg = load_config(RLConfig, CONFIGS / name, [])
    assert cfg.algorithm == "tgrpo" and cfg.temporal and cfg.shuffled_generations == cfg.num_generations // 2


def test_reference_recipe_values():
    cfg = load_config(RLConfig, CONFIGS / "rl_qwen25vl7b_tgrpo.yaml", [])
    assert (cfg.num_generations, cfg.beta, cfg.learning_rate, cfg.weight_decay, cfg.max_grad_norm) == \
        (8, 0.04, 1e-6, 0.01, 5.0)
    assert (cfg.alpha, cfg.mu, cfg.video.max_frames, cfg.video.max_pixels) == (0.3, 0.8, 16, 128 * 28 * 28)
    assert cfg.gradient_checkpointing and cfg.max_completion_length == 768 and cfg.top_p == 0.95


@pytest.mark.parametrize("overrides,message", [
    (["loss_type=token_sum"], "known: bnpo, dapo, dr_grpo, grpo"),
    (["rewards=[accuracy,nope]"], "unknown reward 'nope'"),
    (["reward_weights=[1.0]"], "reward_weights has 1 entries for 2 rewards"),
    (["algorithm=ppo"], "'ppo' is not one of"),
    (["temporal_bonus_mode=both"], "'both' is not one of"),
    (["num_generations=1"], "num_generations must be >= 2"),
    (["epsilon_high=0.1"], "epsilon_high"),
    (["shuffle_unit=pair", "video.min_frames=2", "video.max_frames=2"], "shuffle_unit 'pair' needs video.min_frames"),
    (["rewards=[accuracy,length]", "length_bonus=true"], "there is no 'length' reward; the length bonus is "
                                                         "switched on by length_bonus: true"),
])
def test_bad_combinations_fail_at_load(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(RLConfig, CONFIGS / "rl_demo_cpu.yaml", overrides)
    load_config(RLConfig, CONFIGS / "rl_demo_cpu.yaml", overrides[1:])  # the rest alone is fine


def test_temporal_is_the_one_algorithm_switch():
    grpo = RLConfig(model="m", train_data="d", output_dir="o", algorithm="grpo", num_shuffled_generations=3)
    tgrpo = RLConfig(model="m", train_data="d", output_dir="o", algorithm="tgrpo", num_generations=6)
    assert not grpo.temporal and grpo.shuffled_generations == 0
    assert tgrpo.temporal and tgrpo.shuffled_generations == 3


def test_cli_reports_a_bad_key_in_one_line(tmp_path):
    videor1 = str(Path(sys.executable).parent / "videor1")
    proc = subprocess.run([videor1, "train", "--config", str(CONFIGS / "rl_demo_cpu.yaml"), "max_stepz=3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown config key 'max_stepz'" in proc.stderr and "max_steps" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_accelerate_and_deepspeed_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    for name in ("zero2", "zero3", "fsdp2", "multi_gpu"):
        path = CONFIGS / "accelerate" / f"{name}.yaml"
        cfg = load_config_from_file(str(path))
        assert cfg.num_processes == 8, name
        ds = yaml.safe_load(path.read_text()).get("deepspeed_config", {}).get("deepspeed_config_file")
        if ds:
            stage = json.loads((CONFIGS.parent / ds).read_text())["zero_optimization"]["stage"]
            assert f"zero{stage}" == name
