"""The scratch buffer of the fused CPU kernels (``tailwise.functional._workspace``)."""

from __future__ import annotations

import copy
import pickle

import torch

from tailwise.functional._workspace import Workspace


def test_buffer_is_reused_while_large_enough() -> None:
    ws = Workspace()
    like = torch.zeros(1)
    t, storage = ws.take((4, 5), like)
    assert t.shape == (4, 5) and t.dtype == like.dtype and t.is_contiguous()
    ws.give_back(storage)
    t2, storage2 = ws.take((3, 5), like)
    assert storage2.data_ptr() == storage.data_ptr()  # smaller: the same memory
    assert t2.shape == (3, 5)
    ws.give_back(storage2)
    _t3, storage3 = ws.take((6, 5), like)  # larger: a new buffer
    assert storage3.numel() == 30 and storage3.data_ptr() != storage.data_ptr()


def test_dtype_change_allocates_anew() -> None:
    ws = Workspace()
    _, storage = ws.take((2, 2), torch.zeros(1, dtype=torch.float32))
    ws.give_back(storage)
    t, storage64 = ws.take((2, 2), torch.zeros(1, dtype=torch.float64))
    assert t.dtype == torch.float64 and storage64.data_ptr() != storage.data_ptr()


def test_a_taken_buffer_is_not_handed_out_twice() -> None:
    """A second caller while the first still holds the buffer (another thread) gets its own."""
    ws = Workspace()
    like = torch.zeros(1)
    _, first = ws.take((2, 3), like)
    ws.give_back(first)
    _a, sa = ws.take((2, 3), like)
    _b, sb = ws.take((2, 3), like)
    assert sa.data_ptr() != sb.data_ptr()
    ws.give_back(sb)
    ws.give_back(sa)  # the same size as the kept one: either may stay, one is kept
    _, again = ws.take((2, 3), like)
    assert again.data_ptr() in (sa.data_ptr(), sb.data_ptr())
    _, other = ws.take((2, 3), like)
    assert other.data_ptr() not in (sa.data_ptr(), sb.data_ptr())


def test_the_larger_buffer_is_kept() -> None:
    ws = Workspace()
    like = torch.zeros(1)
    _, big = ws.take((10, 10), like)
    _, small = ws.take((2, 2), like)
    ws.give_back(big)
    ws.give_back(small)
    _, got = ws.take((1, 1), like)
    assert got.data_ptr() == big.data_ptr()


def test_copies_and_pickles_start_empty() -> None:
    ws = Workspace()
    _, storage = ws.take((3, 3), torch.zeros(1))
    ws.give_back(storage)
    for other in (copy.deepcopy(ws), pickle.loads(pickle.dumps(ws))):
        _, got = other.take((3, 3), torch.zeros(1))
        assert got.data_ptr() != storage.data_ptr()


def test_an_inference_buffer_is_not_handed_out_outside_inference_mode() -> None:
    ws = Workspace()
    like = torch.empty(2, 3)
    with torch.inference_mode():
        buf, storage = ws.take((4, 5), like)
        assert buf.is_inference()
        ws.give_back(storage)
        again, storage = ws.take((4, 5), like)  # inside inference mode it is reused
        assert again.data_ptr() == buf.data_ptr()
        ws.give_back(storage)
    fresh, storage = ws.take((4, 5), like)
    assert not fresh.is_inference()
    fresh.fill_(1.0)  # writable outside inference mode
    ws.give_back(storage)
