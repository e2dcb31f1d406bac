"""fastres: a speed-optimised ResNet trainer that reports honest time-to-accuracy.

Data flows one way through the modules:
    data.py (files -> uint8 tensors -> device tensors) -> augment.py (batched, on device)
    -> model.py -> train.py (the training loop, timed) -> evaluate.py (TTA) -> report.py
config.py holds the one Config dataclass and the named recipes; cli.py derives flags from it.
"""
__version__ = "0.1.0"
