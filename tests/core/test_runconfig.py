"""The typed config view the trainer reads, and the trainer's ``due`` timing helper."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from transfer import runconfig
from transfer.config import DEFAULTS, SCHEMA, load_config
from transfer.errors import UserError
from transfer.runconfig import RunConfig
from transfer.trainer import due

# the annotation each schema kind must carry (a Field with none=True adds Optional, auto=True adds str)
KIND = {"int": int, "float": float, "bool": bool, "str": str}


def _leaf_fields():
    """``{"optim.batch_size": annotation, ...}`` over RunConfig and its sections."""
    hints = typing.get_type_hints(RunConfig)
    out = {}
    for f in dataclasses.fields(RunConfig):
        sec = runconfig.SECTIONS.get(f.name)
        if sec is None:
            out[f.name] = hints[f.name]
        else:
            sub = typing.get_type_hints(sec)
            out.update({f"{f.name}.{g.name}": sub[g.name] for g in dataclasses.fields(sec)})
    return out


def test_sections_mirror_the_schema():
    leaves = _leaf_fields()
    assert set(leaves) == set(SCHEMA) | {"method.params", "data.aug"}
    for key, field in SCHEMA.items():
        want = KIND[field.kind]
        if field.auto:
            want = typing.Union[want, str]
        if field.none:
            want = typing.Optional[want]
        assert leaves[key] == want, (key, leaves[key], want)


def test_from_dict_types_values_and_leaves_the_dict_alone():
    cfg = load_config(None, ["optim.epochs=6", "optim.base_lr=1", "train.threads=2"])
    cfg["optim"]["epochs"] = 6  # an int where a float belongs, as a hand-built dict might hold
    c = RunConfig.from_dict(cfg)
    assert type(c.optim.epochs) is float and c.optim.epochs == 6.0 and type(c.optim.base_lr) is float
    assert c.train.threads == 2 and c.optim.batch_size == DEFAULTS["optim"]["batch_size"]
    assert type(cfg["optim"]["epochs"]) is int  # the caller's dict is not rewritten
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.optim.batch_size = 1  # type: ignore[misc]


def test_from_dict_names_the_bad_key():
    cfg = load_config(None, [])
    cfg["train"]["log_every"] = 0
    with pytest.raises(UserError, match="train.log_every"):
        RunConfig.from_dict(cfg)


@pytest.mark.parametrize("step,every,want", [
    (0, 10, True), (10, 10, True), (11, 10, False), (7, 1, True), (3, 2, False),
    (5, 0, False), (0, 0, False), (5, None, False)])
def test_due(step, every, want):
    assert due(step, every) is want
