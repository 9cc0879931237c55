"""`dinomix train`'s option defaults are TrainConfig's own, --optimizer picks its learning
rate, and `--set` / option errors end in one line (exit 2)."""

from __future__ import annotations

import dataclasses

from dinomix_core.cli._train_args import OPTION_OF, config_from_args
from dinomix_core.cli.main import build_parser, main
from dinomix_core.engine.config import TrainConfig


def _args(*extra: str):
    return build_parser().parse_args(["train", "--data", "d", "--labeled", "1", "--out", "o", *extra])


def test_no_option_given_is_the_config_default():
    from_cli = config_from_args(_args()).to_dict()
    assert from_cli == TrainConfig().to_dict()
    # every field an option sets is a real field, so the table cannot go stale silently
    assert set(OPTION_OF) <= {f.name for f in dataclasses.fields(TrainConfig)}


def test_adamw_gets_its_own_learning_rate_unless_lr_is_given():
    assert config_from_args(_args("--optimizer", "adamw")).lr == 3e-3
    assert config_from_args(_args()).lr == 0.03
    assert config_from_args(_args("--optimizer", "adamw", "--lr", "0.01")).lr == 0.01
    cfg = config_from_args(_args("--lr-schedule", "cosine", "--warmup", "0.1", "--no-augment"))
    assert (cfg.lr_schedule, cfg.warmup_fraction, cfg.augment) == ("cosine", 0.1, False)


def test_bad_schedule_options_are_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--labeled", "1", "--out", str(tmp_path / "r"),
                 "--warmup", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "warmup_fraction" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["demo", "--out", str(tmp_path / "demo"), "--set", "no_such_field=1"]) == 2
    err = capsys.readouterr().err
    assert "--set 'no_such_field=1'" in err and "Traceback" not in err
    assert not (tmp_path / "demo").exists()  # refused before anything was written
