"""Selection maths: policies rank by the right score; top-k and softmax sampling keep k distinct examples;
JEST's chunked joint sampler draws each chunk from exactly the conditional scores it should."""

import pytest
import torch

from winnow.method.jest import conditional_losses, jest_select, jest_select_per_group, pair_losses
from winnow.method.losses import contrastive_losses
from winnow.method.policies import POLICIES
from winnow.method.sampling import select


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


# ---------------------------------------------------------------- JEST: joint selection (contrastive)


def _logits(n: int, seed: int) -> torch.Tensor:
    """The (n, n) image-text logits of a made-up CLIP batch: matched pairs on the diagonal score higher."""
    gen = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn(n, n, generator=gen, dtype=torch.float64) + 4.0 * torch.eye(n, dtype=torch.float64)


def _batch_loss(logits: torch.Tensor, rows: list[int]) -> float:
    """Brute force: the summed contrastive loss of exactly these pairs, as a batch of their own."""
    index = torch.tensor(rows)
    return pair_losses(logits[index][:, index]).sum().item()


def test_pair_losses_from_logits_are_the_per_pair_contrastive_losses():
    gen = torch.Generator().manual_seed(0)
    image, text = (torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=1) for _ in range(2))
    scale = torch.tensor(10.0)
    assert torch.allclose(pair_losses(scale * image @ text.T), contrastive_losses(image, text, scale), atol=1e-6)


def test_a_candidates_conditional_loss_is_how_much_it_grows_the_chosen_batchs_loss():
    logits = _logits(7, seed=0)
    chosen = torch.zeros(7, dtype=torch.bool)
    chosen[[1, 4, 5]] = True
    conditional = conditional_losses(logits, chosen)
    for c in range(7):
        if chosen[c]:
            assert conditional[c] == float("-inf")  # already in the batch: not a candidate
        else:
            expected = _batch_loss(logits, [1, 4, 5, c]) - _batch_loss(logits, [1, 4, 5])
            assert abs(conditional[c].item() - expected) < 1e-9


def test_jest_with_one_chunk_is_per_example_learnability_by_softmax_sampling():
    actor, reference = _logits(12, seed=1), _logits(12, seed=2)
    rule = POLICIES["learnability"]
    joint = jest_select(rule, actor, reference, 4, chunks=1, temperature=0.5, generator=torch.Generator().manual_seed(3))
    scores = pair_losses(actor) - pair_losses(reference)  # each pair against the whole super-batch
    alone = select(scores, 4, "softmax", temperature=0.5, generator=torch.Generator().manual_seed(3))
    assert joint.tolist() == alone.tolist()


@pytest.mark.parametrize("policy", ["learnability", "hard_learner", "easy_reference"])
def test_each_later_jest_chunk_is_drawn_from_the_conditional_scores_given_the_chunks_before(policy):
    n, k, chunks, temperature = 10, 6, 3, 0.7
    actor, reference = _logits(n, seed=4), _logits(n, seed=5)
    rule = POLICIES[policy]

    def score(actor_value, reference_value):  # what each policy ranks by, written out
        return {"learnability": actor_value - reference_value, "hard_learner": actor_value, "easy_reference": -reference_value}[
            policy
        ]

    # brute force: chunk by chunk, each candidate's score from the explicit batch losses, the same Gumbel draws
    gen, chosen = torch.Generator().manual_seed(6), []
    for chunk in range(chunks):
        keys = []
        for c in range(n):
            if chunk == 0:
                value = score(pair_losses(actor)[c].item(), pair_losses(reference)[c].item())
            else:
                gain = [_batch_loss(z, chosen + [c]) - _batch_loss(z, chosen) for z in (actor, reference)]
                value = score(*gain)
            keys.append(value)
        gumbel = -torch.log(-torch.log(torch.rand(n, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)))
        key = torch.tensor(keys, dtype=torch.float64) / temperature + gumbel
        key[chosen] = float("-inf")
        chosen += torch.topk(key, k // chunks).indices.tolist()

    joint = jest_select(rule, actor, reference, k, chunks, temperature, torch.Generator().manual_seed(6))
    assert joint.tolist() == chosen
    assert len(set(joint.tolist())) == k


def test_jest_chunks_split_the_batch_as_evenly_as_they_can_and_never_exceed_it():
    actor, reference = _logits(20, seed=7), _logits(20, seed=8)
    kept = jest_select(POLICIES["learnability"], actor, reference, 7, chunks=3, generator=torch.Generator().manual_seed(0))
    assert len(set(kept.tolist())) == 7  # chunks of 3, 2 and 2
    with pytest.raises(ValueError, match="in 8 chunks"):
        jest_select(POLICIES["learnability"], actor, reference, 7, chunks=8)


def test_jest_per_group_chooses_within_each_groups_own_block():
    """What DDP ranks do: each selects from its own share of the super-batch (its block of the logits)."""
    actor, reference = _logits(16, seed=9), _logits(16, seed=10)
    kept = jest_select_per_group(POLICIES["learnability"], actor, reference, 8, 2, 2, 1.0, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    first = jest_select(POLICIES["learnability"], actor[:8, :8], reference[:8, :8], 4, 2, 1.0, gen)
    second = jest_select(POLICIES["learnability"], actor[8:, 8:], reference[8:, 8:], 4, 2, 1.0, gen)
    assert kept.tolist() == first.tolist() + (second + 8).tolist()


def test_keep_fraction_one_tenth_keeps_k_distinct_examples_per_example_and_jointly():
    """keep_fraction 0.1: a super-batch of 10x the batch."""
    n, k = 5120, 512
    scores = torch.randn(n, generator=torch.Generator().manual_seed(0))
    assert len(set(select(scores, k).tolist())) == k
    actor, reference = _logits(640, seed=11), _logits(640, seed=12)
    kept = jest_select(POLICIES["learnability"], actor, reference, 64, chunks=4, generator=torch.Generator().manual_seed(0))
    assert len(set(kept.tolist())) == 64
