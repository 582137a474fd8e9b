from dataclasses import dataclass, field

import pytest

from fsvideo.config import ModelConfig, from_dict, load_config, resolve_config_path
from fsvideo.errors import ConfigError


def test_bundled_ffhq_config():
    cfg = load_config(resolve_config_path("ffhq"), ModelConfig, section="model")
    assert cfg.resolution == 1024 and cfg.feature_index == 5
    assert set(cfg.directions) == {"smile", "makeup", "eyeglasses"}


@dataclass
class Inner:
    a: int = 1
    b: list[float] = field(default_factory=list)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str | None = None


def test_unknown_key_and_wrong_type_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"x\.inner: unknown key\(s\) c"):
        from_dict(Outer, {"inner": {"c": 1}}, "x")
    with pytest.raises(ConfigError, match=r"x\.inner\.a: expected int"):
        from_dict(Outer, {"inner": {"a": "one"}}, "x")
    with pytest.raises(ConfigError, match=r"expected int"):
        from_dict(Outer, {"inner": {"a": True}}, "x")
    assert from_dict(Outer, {"inner": {"b": [1, 2.5]}}).inner.b == [1.0, 2.5]
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  resolution: 1024\n  featur_index: 5\n")
    with pytest.raises(ConfigError, match="bad.yaml:model: unknown key.*featur_index"):
        load_config(p, ModelConfig, section="model")
    with pytest.raises(ConfigError, match="no config named"):
        resolve_config_path("nope")


def test_misspelt_section_and_binary_file_are_one_line_errors(tmp_path):
    """A misspelt top-level section was ignored (the defaults ran instead of the file); a file that is not
    UTF-8 raised UnicodeDecodeError (an internal error in the CLI)."""
    p = tmp_path / "typo.yaml"
    p.write_text("modle:\n  resolution: 64\n")
    with pytest.raises(ConfigError, match="typo.yaml: unknown top-level key.*modle"):
        load_config(p, ModelConfig, section="model")
    assert load_config(resolve_config_path("ffhq"), ModelConfig, section="model").resolution == 1024  # model + train
    b = tmp_path / "bin.yaml"
    b.write_bytes(b"\xff\xfe\x00model: {}")
    with pytest.raises(ConfigError, match="bin.yaml is not a UTF-8 text file"):
        load_config(b, ModelConfig, section="model")


def test_a_config_without_the_section_asked_for_is_an_error():
    """`fsvideo edit --config tiny` (a training config: `train:` only) quietly ran the FFHQ defaults."""
    with pytest.raises(ConfigError, match=r"tiny.yaml has no `model:` section \(it holds `train`\).*--config ffhq"):
        load_config(resolve_config_path("tiny"), ModelConfig, section="model")
