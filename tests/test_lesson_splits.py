"""Issue 16 item 2: every lesson draws its train/val/test split per seed (the study's ``split_per_seed``), so the
test set's own sampling noise enters each interval; the test-set size stands next to it."""

from __future__ import annotations

import numpy as np

from tricklab.lessons import LESSONS, lesson_spec
from tricklab.study.spec import study_from_dict

SPEC = {"name": "splits", "base": {"data": {"name": "digits"}, "epochs": 1}, "seeds": 3,
        "factors": {"width": {"narrow": {"model.width": 16}, "wide": {"model.width": 32}}}}


def test_a_study_with_split_per_seed_gives_each_trial_the_split_of_its_seed():
    per_seed = study_from_dict({**SPEC, "split_per_seed": True})
    fixed = study_from_dict(SPEC)
    assert [per_seed.trial_recipe("wide", s).data.split_seed for s in range(3)] == [0, 1, 2]
    assert [fixed.trial_recipe("wide", s).data.split_seed for s in range(3)] == [0, 0, 0]
    assert per_seed.trial_recipe("narrow", 2).seed == 2 and per_seed.trial_recipe("narrow", 2).model.width == 16
    assert per_seed.spec_hash() != fixed.spec_hash()                       # another set of runs
    assert study_from_dict({**SPEC, "split_per_seed": False}).spec_hash() == fixed.spec_hash()


def test_the_splits_drawn_for_two_seeds_hold_different_test_examples_of_the_same_size():
    from tricklab.train.run import prepare_data

    spec = study_from_dict({**SPEC, "split_per_seed": True})
    a, b = (prepare_data(spec.trial_recipe("wide", s)) for s in (0, 1))
    assert a.x_test.shape == b.x_test.shape
    assert not np.array_equal(np.asarray(a.x_test), np.asarray(b.x_test))
    # the same seed gives the same split: arms stay paired
    again = prepare_data(spec.trial_recipe("narrow", 0))
    assert np.array_equal(np.asarray(a.x_test), np.asarray(again.x_test))


def test_every_lesson_draws_its_split_per_seed(tmp_path):
    for lesson in LESSONS.values():
        spec = lesson_spec(lesson, True, tmp_path)
        assert spec.split_per_seed, lesson.name
        seeds = spec.seed_list()
        arm = spec.arm_names()[0]
        assert [spec.trial_recipe(arm, s).data.split_seed for s in seeds] == seeds
