"""The benchmark's pieces run (its timings are measured by `python -m vibench.bench`, not in tests)."""

from __future__ import annotations

import torch

from vibench.bench import PlainLoop, optional, quantiles


def test_quantiles():
    q = quantiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert q["median"] == 3.0 and q["n"] == 5 and q["q1"] <= 3.0 <= q["q3"]
    assert quantiles([2.0]) == {"median": 2.0, "q1": 2.0, "q3": 2.0, "n": 1}


def test_plain_reference_loop_trains():
    data = (torch.rand(300, 784) < 0.1).float()
    loop = PlainLoop(data)
    before = [p.clone() for p in loop.dec.parameters()]
    loop.block(3)
    assert any(not torch.equal(a, b) for a, b in zip(before, loop.dec.parameters()))


def test_missing_peer_is_skipped(capsys):
    def absent():
        raise ImportError("no module named pyro")

    assert optional("pyro", absent) is None and "not installed" in capsys.readouterr().err


def test_the_benchmark_names_the_cpu_load_it_ran_under():
    import os

    import torch

    from vibench.bench import machine

    info = machine(torch.device("cpu"))
    assert info["cpu_count"] == len(os.sched_getaffinity(0)) and info["load_at_start"] >= 0 and info["threads"] == torch.get_num_threads()
