"""``export.train_config.TrainConfig``: one list of training options. A bad value is one line
naming the option and the value, through the API and the CLI alike; the CLI's flags are the
dataclass's fields with its defaults; ``to_dict`` is train.json's ``options`` and reads back.
No torch: the CLI refuses a bad option before importing it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_infer.errors import EdgeInferError
from edge_infer.metadata import Preprocess
from export.train_config import RECORDED, ConfigError, TrainConfig
from train.cli import cli

# fields no flag sets: where the store lives and the optimizer (API and benchmarks), and the facts fit records
NOT_FLAGS = {"store", "optimizer", "lr_source", "processes"}
FIT_ONLY = {"epochs", "freeze_epochs", "lr"}


@pytest.mark.parametrize("option, value, message", [
    ("arch", "vgg16", "arch must be one of ['resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'], got 'vgg16'"),
    ("size", 8, "size must be an int >= 16 (the ResNets' minimum) or two of them, got 8"),
    ("size", (32, 8), "size must be an int >= 16 (the ResNets' minimum) or two of them, got (32, 8)"),
    ("resize", "stretch", "resize must be one of ['crop', 'squish', 'pad'], got 'stretch'"),
    ("bs", 0, "bs must be an int >= 1 or null, got 0"),
    ("valid_pct", 1.0, "valid_pct must be between 0 and 1, got 1.0"),
    ("epochs", True, "epochs must be an int >= 1, got True"),
    ("freeze_epochs", -1, "freeze_epochs must be an int >= 0, got -1"),
    ("lr", 20.0, "lr must be 'auto' or in (0, 10), got 20.0"),
    ("lr", "fast", "lr must be 'auto' or in (0, 10), got 'fast'"),
    ("optimizer", "sgd", "optimizer must be one of ['adam', 'adamw'], got 'sgd'"),
    ("store", "cache", "store must be a Path, false or null, got 'cache'"),
])
def test_a_bad_option_is_one_line_naming_it_and_its_value(option, value, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**{option: value})
    assert str(e.value) == message
    assert isinstance(e.value, EdgeInferError) and isinstance(e.value, ValueError)  # the CLIs' one family


def test_defaults_and_preprocess():
    config = TrainConfig(size=(32, 48), resize="pad", pad_mode="zeros")
    assert config.preprocess == Preprocess(size=(32, 48), resize="pad", pad_mode="zeros")
    assert TrainConfig().preprocess == Preprocess(size=(224, 224))


def test_to_dict_is_train_jsons_options_and_reads_back():
    config = TrainConfig(arch="resnet18", size=(32, 32), lr=1e-3, bs=8, weights=Path("/w/r18.pth"), augment=True,
                         workers=2, processes=2)
    d = config.to_dict()
    assert tuple(d) == RECORDED and d["weights"] == "/w/r18.pth"
    back = TrainConfig.from_dict(d, Preprocess(size=(32, 32)))
    assert back == dataclasses.replace(config, weights="/w/r18.pth")


def _flags(command: str) -> dict[str, object]:
    return {p.name: p.default for p in cli.commands[command].params if p.name not in ("data", "out")}


def test_the_cli_flags_are_the_configs_fields_with_its_defaults():
    """One list: ``fit`` offers every field but those no flag sets; ``lr-find`` the same less the
    training schedule; each default is the dataclass's."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(_flags("fit")) == fields - NOT_FLAGS
    assert set(_flags("lr-find")) == fields - NOT_FLAGS - FIT_ONLY
    assert _flags("fit") == {name: getattr(TrainConfig(), name) for name in fields - NOT_FLAGS}


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "Error: epochs must be an int >= 1, got 0"),
    (["--valid-pct", "1"], "Error: valid_pct must be between 0 and 1, got 1.0"),
    (["--lr", "20"], "Error: lr must be 'auto' or in (0, 10), got 20.0"),
    (["--size", "8"], "Error: size must be an int >= 16 (the ResNets' minimum) or two of them, got 8"),
])
def test_the_cli_refuses_a_bad_option_in_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["fit", str(tmp_path), "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [message]
    assert not (tmp_path / "run").exists()
