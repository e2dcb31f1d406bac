"""Triton kernels of fastres, installed as `fastres.kernels` (see setup.py's package_dir)."""
from .bn_act_layer import ACTIVATIONS, BatchNormAct2d, activation, bn_act_reference, use_reference

__all__ = ["ACTIVATIONS", "BatchNormAct2d", "activation", "bn_act_reference", "use_reference"]
