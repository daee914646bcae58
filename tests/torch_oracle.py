"""PyTorch CPU as the independent oracle for LSTM and GRU (reset after), with packing."""

from __future__ import annotations

import numpy as np
import torch

torch.set_num_threads(1)


def make_module(cell, input_size, hidden_size, num_layers, bidirectional, proj_size, bias, dtype):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias)
    if cell == "lstm":
        m = torch.nn.LSTM(input_size, hidden_size, proj_size=proj_size, **kw)
    else:
        m = torch.nn.GRU(input_size, hidden_size, **kw)
    return m.to(torch.float64 if dtype == np.float64 else torch.float32)


def run(module, cell, x, state0, lengths, batch_first, dy, dstate_n):
    """Forward and backward through ``module``; returns numpy y, state_n, dx, dstate0, dparams.

    x, dy are in the caller's layout (batch_first or not); lengths may be None; items of
    length 0 are not supported by packing and must be filtered out by the caller.
    """
    module.batch_first = batch_first
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in state0]
    hx = tuple(st) if cell == "lstm" else st[0]
    if lengths is None:
        y, hn = module(xt, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.tensor(lengths, dtype=torch.int64), batch_first=batch_first, enforce_sorted=False)
        yp, hn = module(packed, hx)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=batch_first,
                                                      total_length=x.shape[1 if batch_first else 0])
    hn = hn if cell == "lstm" else (hn,)
    loss = (y * torch.tensor(dy)).sum()
    for h, d in zip(hn, dstate_n):
        loss = loss + (h * torch.tensor(d)).sum()
    module.zero_grad()
    loss.backward()
    dparams = {k: (v.grad.numpy().copy() if v.grad is not None else np.zeros(v.shape))
               for k, v in module.named_parameters()}
    return (y.detach().numpy(), tuple(h.detach().numpy() for h in hn), xt.grad.numpy(),
            tuple(s.grad.numpy() for s in st), dparams)
