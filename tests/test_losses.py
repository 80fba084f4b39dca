"""Per-example losses are what the batch loss is made of."""

import torch
import torch.nn.functional as F

from models import CLASSIFIERS, build_classifier
from winnow.datasets.contract import to_input
from winnow.method.losses import per_example_loss, score_examples


def test_per_example_losses_average_to_the_batch_cross_entropy():
    torch.manual_seed(0)
    model = build_classifier("cnn-nano", 5)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 5, (16,))
    losses = per_example_loss(model, images, labels)
    assert losses.shape == (16,)
    assert torch.allclose(losses.mean(), F.cross_entropy(model(to_input(images)), labels), atol=1e-6)


def test_batched_scoring_matches_one_pass_and_leaves_the_mode_alone():
    torch.manual_seed(0)
    model = build_classifier("cnn-nano", 5).train()
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 5, (50,))
    assert torch.allclose(
        score_examples(model, images, labels, batch_size=7), per_example_loss(model.eval(), images, labels).detach(), atol=1e-5
    )


def test_every_named_model_builds_and_classifies_32px_images():
    for name in CLASSIFIERS:
        if name in ("vit-small", "vit-b", "cnn-base"):
            continue  # large; same builders, exercised on a GPU
        model = build_classifier(name, 7)
        out = model(torch.zeros(2, 3, 32, 32))
        assert out.shape == (2, 7), name
        assert model.embed(torch.zeros(2, 3, 32, 32)).shape == (2, model.feature_dim)
