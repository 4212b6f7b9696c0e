"""`rnncc study`: RNN vs LSTM vs GRU (and any cell a user writes), measured.

    cost.py            parameters, FLOPs and tape per step from a cell's Plan; time per step
    gradient_flow.py   |d y_T / d x_(T-k)| by rnncc's BPTT, and its decay per step
    tasks.py           the adding problem and the copy-memory task; training through rnncc.torch
    run.py             the four parts in order into one results dict (results.json)
    report.py          REPORT.md and the figures, from that dict alone

Needs torch and matplotlib (`pip install "rnncc[study]"`); `import rnncc` imports none of it.
"""
