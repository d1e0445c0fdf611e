"""``cd.data.mnist("test")`` is class-interleaved; ids are held-out positions in either order; the harness's sets keep id order."""

from __future__ import annotations

import torch

import constrained_diffusion as cd
from constrained_diffusion.data.images import open_images
from constrained_diffusion.data.mnist import held_out_positions


def test_validation_and_test_are_class_interleaved_with_stable_ids():
    held, _ = cd.data.mnist("held-out")
    for split in ("validation", "test"):
        images, labels = cd.data.mnist(split)
        assert labels[:20].tolist() == list(range(10)) * 2
        ids = held_out_positions(split)
        assert torch.equal(images, held[ids])  # a digit is its held-out position's image
        by_id, by_id_labels = cd.data.mnist(split, order="id")
        assert sorted(ids.tolist()) == held_out_positions(split, "id").tolist()
        assert torch.equal(by_id, held[held_out_positions(split, "id")]) and by_id_labels[:25].tolist() == [0] * 25


def test_the_shipped_demo_digits_are_the_first_test_digits():
    images, labels = cd.data.mnist("test")
    shipped, shipped_labels, ids = cd.data.shipped_test_digits()
    assert torch.equal(shipped, images[:20]) and torch.equal(shipped_labels, labels[:20])
    assert ids == [f"{int(p):05d}" for p in held_out_positions("test")[:20]]


def test_train_held_out_and_the_harness_sets_keep_id_order():
    _, held_labels = cd.data.mnist("held-out")
    assert held_labels[:50].tolist() == [0] * 50
    test = open_images("mnist-test", (1, 32, 32))
    assert test.ids == sorted(test.ids)  # "first N" of the harness: by id, as in the tuning tables
    assert torch.equal(test.load(0), cd.data.mnist("held-out")[0][int(test.ids[0])])
