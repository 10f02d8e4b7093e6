"""videor1.config: YAML + key=value overrides into frozen, validated dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import pytest

from videor1.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from videor1.data.media import ImageSpec, VideoSpec


@dataclasses.dataclass(frozen=True)
class Demo:
    name: str = "x"  # a string
    steps: int = 10  # an int
    lr: float = 1e-3  # a float
    flag: bool = False  # a bool
    mode: Literal["a", "b"] = "a"  # a choice
    names: tuple[str, ...] = ("accuracy", "format")  # a list of names
    weights: Optional[tuple[float, ...]] = None  # optional list of floats
    video: VideoSpec = VideoSpec()  # nested
    image: ImageSpec = ImageSpec(max_pixels=3136)  # nested, with a non-default default

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
    with pytest.raises(ConfigError, match=r"^video\.max_frames: must be even.*got 7"):
        config_from_dict(Demo, {"video": {"max_frames": 7}})
    with pytest.raises(ConfigError, match=r"^video\.min_frames: must be >= 2"):
        load_config(Demo, None, ["video.min_frames=1"])
    with pytest.raises(ConfigError, match=r"^image\.max_pixels: must be >= min_pixels"):
        load_config(Demo, None, ["image.min_pixels=5000"])
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


def test_sections_are_laid_over_the_field_default():
    cfg = load_config(Demo, None, ["image.min_pixels=1000"])
    assert cfg.image == ImageSpec(min_pixels=1000, max_pixels=3136)  # max_pixels: Demo's default, not ImageSpec's
    assert load_config(Demo, None, []).image == ImageSpec(max_pixels=3136)
    cfg = config_from_dict(Demo, {"steps": 3}, base=Demo(name="b", steps=9))
    assert (cfg.name, cfg.steps) == ("b", 3)


@dataclasses.dataclass(frozen=True)
class Needs:
    path: str  # required
    other: int  # required
    video: VideoSpec = VideoSpec()


def test_missing_required_keys_and_bad_yaml_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing required keys path, other for Needs"):
        config_from_dict(Needs, {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("path: x\nother: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML at line \d+, column \d+"):
        load_config(Needs, bad, [])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Needs, listed, [])


def test_values_sit_between_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("path: a\nother: 1\nvideo: {max_frames: 8}\n")
    cfg = load_config(Needs, path, ["other=3"], values={"other": 2, "path": None, "video.fps": 1.0})
    assert (cfg.path, cfg.other, cfg.video.max_frames, cfg.video.fps) == ("a", 3, 8, 1.0)


def test_media_specs_validate_with_field_names():
    assert VideoSpec() == VideoSpec(fps=2.0, min_frames=4, max_frames=16, min_pixels=3136, max_pixels=100352)
    for kwargs, key in [({"fps": 0}, "fps"), ({"min_frames": 1}, "min_frames"), ({"min_frames": 5, "max_frames": 8},
                        "min_frames"), ({"max_frames": 2}, "max_frames"), ({"max_frames": 9}, "max_frames"),
                        ({"min_pixels": 0}, "min_pixels"), ({"max_pixels": 700}, "max_pixels")]:
        with pytest.raises(ConfigError) as info:
            VideoSpec(**kwargs)
        assert info.value.key == key and str(info.value).startswith(f"{key}: ")
    with pytest.raises(ValueError, match="^max_pixels"):
        ImageSpec(min_pixels=1000, max_pixels=500)
