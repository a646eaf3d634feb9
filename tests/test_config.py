"""Configs: every shipped config loads; bad values fail with one clear sentence."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robustq.config import RunConfig, load_config
from robustq.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    names = {p.stem for p in CONFIGS}
    assert "quickstart" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert load_config(None, base=cfg.to_dict()) == cfg  # round trip through a dict


def test_defaults_are_the_papers():
    cfg = load_config(None)
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay, cfg.train.batch_size) == (0.1, 0.9, 5e-4, 128)
    assert cfg.train.epochs == 200 and cfg.train.milestones == [0.4, 0.6, 0.8]
    assert (cfg.adv.eps, cfg.adv.step, cfg.adv.steps) == (0.031, 0.007, 10)
    assert (cfg.loss.name, cfg.loss.alpha, cfg.loss.beta) == ("tradeoff", 1.0, 8.0)
    assert cfg.eval.attacks == ["fgsm", "ifgsm", "cw_paper"] and cfg.model.noise == 0.1


def test_overrides_are_parsed_as_yaml_and_eps_kept_as_written():
    cfg = load_config(None, ["train.epochs=7", "adv.eps=8/255", "eval.n_eval=null",
                             "eval.attacks=[fgsm]", "train.channels_last=false"])
    assert cfg.train.epochs == 7 and cfg.eval.n_eval is None
    assert cfg.adv.eps == pytest.approx(8 / 255) and cfg.adv.eps.spec == "8/255"  # parsed once
    assert isinstance(cfg.adv.eps, float) and isinstance(cfg.adv.step, float)
    assert cfg.eval.attacks == ["fgsm"] and cfg.train.channels_last is False
    assert "eps: 8/255" in cfg.to_yaml() and "eps: 0.031" in cfg.to_yaml()
    again = load_config(None, base=yaml.safe_load(cfg.to_yaml()))   # the saved config.yaml
    assert again.adv.eps.spec == "8/255" and again.eval.eps.spec == 0.031


def test_attack_args_are_checked_against_each_attack_and_parsed_once():
    cfg = load_config(None, ["eval.attack_args={pgd: {steps: 3, alpha: 2/255}, ifgsm: {steps: 5}}"])
    pgd = cfg.eval.attack_args["pgd"]
    assert pgd["steps"] == 3 and pgd["alpha"] == pytest.approx(2 / 255) and pgd["alpha"].spec == "2/255"
    assert "alpha: 2/255" in cfg.to_yaml()


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("trian.epochs=3", "unknown config key 'trian'"),
    ("train.epochs=ten", "'train.epochs' must be an integer"),
    ("train.epochs=2.5", "'train.epochs' must be an integer"),
    ("train.lr=fast", "'train.lr' must be a number"),
    ("adv.eps=-0.1", "'adv.eps' must be >= 0"),
    ("eval.eps=8", "more than the whole [0, 1] pixel range"),
    ("adv.step=0", "'adv.step' must be > 0"),
    ("quant.scheme=9bit", "quant.scheme '9bit' is not supported"),
    ("quant.scheme=float", "quant.method none trains float weights"),
    ("loss.alpha=0", None),  # AT: fine
    ("model.depth=21", "model.depth must be 6n+2"),
    ("data.name=imagenet", "data.name 'imagenet' is not a known dataset"),
    ("eval.attacks=[fgsm, deepfool]", "'deepfool' is not a known attack"),
    ("device=tpu", "device must be auto, cpu, cuda"),
    ("train.milestones=[0.8, 0.4]", "increasing fractions"),
    ("train.max_batches=0", "train.max_batches must be >= 1"),
    ("eval.eps=eight", "'eval.eps' must be a number or a fraction like 8/255"),
    ("eval.eps=8/0", "'eval.eps' must be a number or a fraction like 8/255"),
    ("eval.attack_args={pgdd: {steps: 3}}", "'pgdd', which is not an attack (did you mean 'pgd'?)"),
    ("eval.attack_args={pgd: {stpes: 3}}", "eval.attack_args.pgd: pgd has no setting 'stpes' (did you mean 'steps'?)"),
    ("eval.attack_args={pgd: {steps: 0}}", "eval.attack_args.pgd: pgd needs steps >= 1"),
    ("eval.attack_args={pgd: {steps: many}}", "eval.attack_args.pgd: invalid literal"),
    ("eval.attack_args={pgd: {alpha: 1/0}}", "eval.attack_args.pgd.alpha: expected a number"),
    ("eval.attack_args={pgd: {eps: 0.1}}", "use eval.eps"),
    ("eval.attack_args={fgsm: 3}", "eval.attack_args.fgsm must be a mapping"),
    ("eval.attack_args={pgd: {loss: hinge}}", "pgd loss must be one of"),
])
def test_bad_values_fail_with_one_sentence(override, message):
    if message is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    text = str(e.value)
    assert message in text and "\n" not in text


def test_alpha_and_beta_both_zero_is_refused():
    with pytest.raises(ConfigError, match="both 0"):
        load_config(None, ["loss.alpha=0", "loss.beta=0"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    bad.write_text("train: 5\n")
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
