"""videor1.config: YAML + key=value overrides into frozen, validated dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import pytest

from videor1.config import (
    ConfigError,
    ImageConfig,
    VideoConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


@dataclasses.dataclass(frozen=True)
class Demo:
    name: str = "x"  # a string
    steps: int = 10  # an int
    lr: float = 1e-3  # a float
    flag: bool = False  # a bool
    mode: Literal["a", "b"] = "a"  # a choice
    names: tuple[str, ...] = ("accuracy", "format")  # a list of names
    weights: Optional[tuple[float, ...]] = None  # optional list of floats
    video: VideoConfig = VideoConfig()  # nested

    def validate(self) -> None:
        if self.steps <= 0:
            raise ConfigError(f"steps must be > 0, got {self.steps}")


def test_yaml_then_overrides_with_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\nsteps: 5\nlr: 1e-6\nvideo:\n  max_frames: 8\n")
    cfg = load_config(Demo, path, ["steps=7", "flag=true", "video.min_frames=2", "names=[accuracy]",
                                   "weights=[1, 0.5]", "mode=b"])
    assert cfg.name == "run" and cfg.steps == 7 and cfg.flag is True and cfg.mode == "b"
    assert cfg.lr == pytest.approx(1e-6) and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-6 as a string
    assert cfg.video.max_frames == 8 and cfg.video.min_frames == 2 and cfg.video.fps == 2.0
    assert cfg.names == ("accuracy",) and cfg.weights == (1.0, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3  # type: ignore[misc]


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"'stpes'.*valid keys: .*steps"):
        load_config(Demo, None, ["stpes=3"])
    with pytest.raises(ConfigError, match=r"'video.fpz'.*fps"):
        load_config(Demo, None, ["video.fpz=3"])
    path = tmp_path / "c.yaml"
    path.write_text("bogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(Demo, path, [])


def test_bad_values_and_validate_hooks():
    with pytest.raises(ConfigError, match="steps: expected an integer"):
        config_from_dict(Demo, {"steps": "many"})
    with pytest.raises(ConfigError, match="flag: expected true or false"):
        config_from_dict(Demo, {"flag": 1})
    with pytest.raises(ConfigError, match="mode: 'c' is not one of"):
        config_from_dict(Demo, {"mode": "c"})
    with pytest.raises(ConfigError, match="steps must be > 0"):
        config_from_dict(Demo, {"steps": 0})
    with pytest.raises(ConfigError, match="video: .*even"):
        config_from_dict(Demo, {"video": {"max_frames": 7}})
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides({}, ["steps"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(Demo, "/nonexistent/c.yaml", [])


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(Demo, None, ["weights=[2, 1]", "video.max_pixels=3136", "name=12"])
    assert cfg.name == "12"
    d = config_to_dict(cfg)
    assert d["names"] == ["accuracy", "format"] and d["video"]["max_pixels"] == 3136
    again = load_config(Demo, save_config(cfg, tmp_path / "saved.yaml"), [])
    assert again == cfg


def test_sub_configs_map_to_media_specs():
    from videor1.data.media import ImageSpec, VideoSpec

    v = VideoConfig(fps=1.0, max_frames=4)
    assert v.to_spec() == VideoSpec(fps=1.0, max_frames=4)
    assert ImageConfig(max_pixels=3136).to_spec() == ImageSpec(max_pixels=3136)
