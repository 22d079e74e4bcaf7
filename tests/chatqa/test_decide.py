"""Answer or abstain: signals, the logistic policy, the draft guard, and loading a calibrated policy."""

from __future__ import annotations

import pytest

from chatqa.decide import READER_CLAMP, AbstentionPolicy, Signals, coverage, reader_signal


def test_reader_signal_is_the_margin_over_the_threshold_clamped():
    assert reader_signal(5.0, 2.0, threshold=-1.0) == 2.0  # 5 - 2 - 1
    assert reader_signal(5.0, 2.0, threshold=-1.0, strictness=3.0) == -1.0
    assert reader_signal(None, 0.0, threshold=4.0) == -READER_CLAMP
    assert reader_signal(100.0, 0.0, threshold=0.0) == READER_CLAMP


def test_coverage_is_the_share_of_question_words_in_the_passages():
    assert coverage("How do I set a timeout for requests?", ["Use timeout= with requests.get", "set it"]) == 1.0
    assert coverage("How do I configure Kerberos?", ["Use timeout= with requests.get"]) == 0.0
    assert coverage("What is it?", []) == 1.0  # no content words: nothing to miss


def test_the_default_policy_is_the_readers_own_threshold():
    policy = AbstentionPolicy()
    assert policy.answers(Signals(reader=0.5, coverage=0.0))
    assert not policy.answers(Signals(reader=-0.5, coverage=1.0))
    assert not policy.retracts(Signals(reader=1.0, coverage=1.0, support=0.0))


def test_a_calibrated_policy_weighs_coverage_and_retracts_unsupported_drafts(tmp_path):
    policy = AbstentionPolicy(weights={"reader": 0.5, "coverage": 6.0}, bias=-4.0, threshold=0.0,
                              guard_weights={"support": 4.0, "mean_logprob": 1.0}, guard_bias=-1.0)
    assert policy.answers(Signals(reader=-1.0, coverage=1.0))  # -0.5 + 6 - 4 >= 0
    assert not policy.answers(Signals(reader=2.0, coverage=0.25))  # 1 + 1.5 - 4 < 0
    assert policy.retracts(Signals(reader=2.0, coverage=1.0, support=0.3, mean_logprob=-0.5))  # 1.2 - 0.5 - 1 < 0
    assert not policy.retracts(Signals(reader=2.0, coverage=1.0, support=0.8, mean_logprob=-0.5))
    assert not policy.retracts(Signals(reader=2.0, coverage=1.0))  # no draft yet: nothing to retract
    path = tmp_path / "abstention.json"
    path.write_text(policy.to_json())
    assert AbstentionPolicy.load(path) == policy
    assert 0.5 < policy.probability(Signals(reader=0.0, coverage=1.0)) < 1.0


def test_a_missing_or_broken_policy_file_falls_back_to_the_reader(tmp_path):
    assert AbstentionPolicy.load(tmp_path / "missing.json") == AbstentionPolicy()
    (tmp_path / "broken.json").write_text("{not json")
    assert AbstentionPolicy.load(tmp_path / "broken.json") == AbstentionPolicy()
    with pytest.raises(ValueError, match="unknown abstention features"):
        AbstentionPolicy(weights={"vibes": 1.0})
    with pytest.raises(ValueError, match="unknown abstention features"):
        AbstentionPolicy(weights={"support": 1.0})  # a draft's signal cannot decide before the draft
