"""Toy datasets, training-curve plots and the CPU demos (``make demo``, ``make demo-seg``).

Not part of the installed ``swin_backbone`` package: imported as ``projects.toy_demo`` from a
checkout (the demos, the tests), with its own dependencies in ``requirements.txt``.
"""
