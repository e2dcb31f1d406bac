"""fastres: a speed-optimised ResNet trainer that reports honest time-to-accuracy.

Data flows one way through the modules:
    data/ (files -> uint8 tensors -> device tensors) -> augment.py (batched, on device)
    -> model.py (+ kernels/, installed as fastres.kernels) -> train.py (the training loop,
    timed) -> evaluate.py (TTA) -> runner.py / report.py (seeds, statistics, files)
config.py holds the one Config dataclass, recipes.py the named recipes, and cli.py derives the
flags from Config; study.py / studies.py and distributed.py build on runner.py.
"""
__version__ = "0.1.0"
