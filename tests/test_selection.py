"""Selection maths: policies rank by the right score; top-k and softmax sampling keep k distinct examples."""

import torch

from winnow.selection import POLICIES, select


def test_learnability_is_learner_loss_minus_reference_loss():
    learner = torch.tensor([5.0, 5.0, 0.1, 2.0])
    reference = torch.tensor([5.0, 0.2, 0.1, 0.5])  # noisy label, learnable, already learnt, learnable
    scores = POLICIES["learnability"].scores(learner, reference)
    assert torch.allclose(scores, learner - reference)
    assert set(select(scores, 2).tolist()) == {1, 3}


def test_hard_learner_keeps_the_highest_learner_loss_and_easy_reference_the_lowest_reference_loss():
    learner = torch.tensor([3.0, 1.0, 2.0])
    reference = torch.tensor([0.5, 0.1, 0.9])
    assert select(POLICIES["hard_learner"].scores(learner, None), 1).tolist() == [0]
    assert select(POLICIES["easy_reference"].scores(None, reference), 1).tolist() == [1]


def test_topk_keeps_exactly_the_k_highest():
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    kept = select(scores, 100)
    assert len(set(kept.tolist())) == 100
    assert scores[kept].min() >= scores.topk(100).values.min()


def test_softmax_sampling_keeps_k_distinct_examples_in_proportion_to_softmax():
    scores = torch.tensor([0.0, 1.0, 2.0])
    gen = torch.Generator().manual_seed(0)
    first = torch.zeros(3)
    for _ in range(20000):
        kept = select(scores, 2, "softmax", temperature=1.0, generator=gen)
        assert len(set(kept.tolist())) == 2
        first[kept[0]] += 1  # the first pick follows softmax(scores) exactly
    expected = torch.softmax(scores, 0)
    assert torch.allclose(first / first.sum(), expected, atol=0.015)


def test_a_high_temperature_makes_softmax_sampling_nearly_uniform():
    scores = torch.arange(10, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    counts = torch.zeros(10)
    for _ in range(5000):
        counts[select(scores, 1, "softmax", temperature=1000.0, generator=gen)] += 1
    assert counts.min() > 400 and counts.max() < 600
