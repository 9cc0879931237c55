"""engine/_argmax.py: the per-voxel class of highest probability, as torch's argmax gives it."""

import torch

from dinomix_core.engine._argmax import class_argmax


def test_class_argmax_equals_torch_argmax_on_softmax_probabilities():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(14, 3, 17, 19, generator=gen) * 3, dim=0)
    got = class_argmax(probs)
    assert got.dtype == torch.uint8 and got.shape == (3, 17, 19)
    assert torch.equal(got.long(), probs.argmax(dim=0))


def test_ties_go_to_the_lower_class_and_views_work():
    probs = torch.zeros(4, 2, 3, 3)
    probs[1] = 0.5
    probs[3] = 0.5  # classes 1 and 3 tie everywhere: 1 wins, as with argmax
    probs[2, 0, 0, 0] = 0.9
    got = class_argmax(probs.transpose(2, 3))  # a non-contiguous view, as regridded slabs are
    assert got[0, 0, 0] == 2 and (got.flatten()[1:] == 1).all()
    assert torch.equal(got.long(), probs.transpose(2, 3).argmax(dim=0))


def test_more_than_256_classes_fall_back_to_argmax():
    probs = torch.rand(300, 2, 2, 2)
    assert torch.equal(class_argmax(probs), probs.argmax(dim=0))
