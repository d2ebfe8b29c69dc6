"""The training batches both trainers share (``backend/learning/batches.py``), on real torch
tensors: padded to the longest example, with the padding neither attended to nor learned."""

from __future__ import annotations

import torch

from backend.learning.batches import next_batch, pad_batch


def test_a_batch_is_right_padded_and_only_its_labels_are_learned() -> None:
    batch = [([5, 6, 7], [-100, 6, 7]), ([8], [8])]
    ids, labels, mask = pad_batch(torch, batch, pad=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert labels.tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == labels.dtype == mask.dtype == torch.long


def test_batches_draw_every_example_once_before_repeating_one() -> None:
    data = list(range(5))
    order: list[int] = []
    generator = torch.Generator().manual_seed(0)
    drawn = [x for _ in range(5) for x in next_batch(torch, data, order, generator, 1)]
    assert sorted(drawn) == data
    assert len(next_batch(torch, data, order, generator, 9)) == 5  # never more than there are
