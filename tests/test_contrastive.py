"""ActiveCLIP's pieces: the per-pair loss is open_clip's ClipLoss split by pair; zero-shot and
retrieval give the numbers a hand-made case says they must."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from models import CLIPS, build_clip, clip_tokenizer
from winnow.datasets.contract import Split
from winnow.method.evaluation import retrieval_recall, zero_shot_accuracy
from winnow.method.losses import contrastive_losses, per_example_contrastive
from winnow.method.objectives import OBJECTIVES


def test_the_mean_of_per_pair_losses_is_open_clips_clip_loss():
    gen = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(32, 16, generator=gen), dim=-1)
    text = F.normalize(torch.randn(32, 16, generator=gen), dim=-1)
    scale = torch.tensor(14.3)
    per_pair = contrastive_losses(image, text, scale)
    assert per_pair.shape == (32,)
    assert torch.allclose(per_pair.mean(), ClipLoss()(image, text, scale), atol=1e-6)


def test_a_mismatched_pair_costs_more_than_a_matched_one():
    text = torch.eye(4)
    image = torch.eye(4)[[0, 1, 3, 2]]  # pairs 2 and 3 swapped their images
    losses = contrastive_losses(image, text, torch.tensor(10.0))
    assert losses[:2].max() < losses[2:].min()


def test_the_per_pair_loss_of_a_real_clip_model_matches_clip_loss_on_its_features():
    torch.manual_seed(0)
    model = build_clip("clip-tiny").eval()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    tokens = clip_tokenizer("clip-tiny")([f"a red circle number {i}" for i in range(8)])
    with torch.no_grad():
        per_pair = per_example_contrastive(model, images, tokens)
        from winnow.datasets.contract import to_input

        image, text = model.encode_image(to_input(images), normalize=True), model.encode_text(tokens, normalize=True)
        assert torch.allclose(per_pair.mean(), ClipLoss()(image, text, model.logit_scale.exp()), atol=1e-5)


def test_the_tiny_clip_keeps_its_token_embedding_fixed_and_the_rest_trains():
    model = build_clip("clip-tiny")
    assert not model.token_embedding.weight.requires_grad
    assert model.visual.conv1.weight.requires_grad and model.transformer.resblocks[0].attn.in_proj_weight.requires_grad
    assert set(CLIPS) >= {"clip-tiny", "clip-vit-b-32"}


def test_zero_shot_accuracy_on_a_hand_made_case():
    classes = torch.eye(3)  # class embeddings on the axes
    images = F.normalize(torch.tensor([[1.0, 0.1, 0], [0.1, 1.0, 0], [0, 0.2, 1.0], [0.9, 0, 0.1]]), dim=-1)
    assert zero_shot_accuracy(images, classes, [0, 1, 2, 2]) == pytest.approx(0.75)  # the last image is nearest class 0


def test_retrieval_recall_on_a_hand_made_case():
    # 4 pairs; text 3 is closest to image 2 and image 3 second:
    # pair 3 is found at rank 2 both ways, pair 2 at rank 2 from its text.
    image = torch.eye(4)
    text = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0.5], [0, 0, 0.9, 0.5]]), dim=-1)
    recall = retrieval_recall(image, text, ks=(1, 2))
    # image->text: image 2 ranks text 2 first (1.0/1.118 > 0.9/1.03);
    # image 3 ranks text 3 (0.486) above text 2 (0.447): all 4 at rank 1
    assert recall["image_to_text_R@1"] == pytest.approx(1.0)
    # text->image: text 3's best image is image 2 (0.874 > 0.486): only 3 of 4 texts find their image first, all within 2
    assert recall["text_to_image_R@1"] == pytest.approx(0.75)
    assert recall["text_to_image_R@2"] == pytest.approx(1.0)


def test_pairs_with_an_empty_caption_are_skipped_and_counted():
    split = Split(
        np.arange(3),
        torch.zeros(3, 3, 32, 32, dtype=torch.uint8),
        np.zeros(3, dtype=np.int64),
        {"caption": np.array(["a red circle", "  ", None], dtype=object)},
        [],
    )
    kept = OBJECTIVES["contrastive"].usable(split)
    assert kept.ids.tolist() == [0]
    assert [(s["id"], s["reason"]) for s in kept.skipped] == [(1, "empty caption"), (2, "empty caption")]
