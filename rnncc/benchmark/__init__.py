"""Kernel benchmark runs (`rnncc bench`; bench/cpu.py is a user of the same code).

    processes.py    each contender timed in a process of its own kind, rounds interleaved
    contenders.py   what those processes time: an rnncc layer, a torch module, the floor
    floor.py        the hardware floor: FMA peak probe, a call's products and their FLOPs
    bench.py        cases measured into a report; the command's table, JSON and plot

Nothing here is imported by `import rnncc`.
"""
