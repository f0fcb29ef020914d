"""Layers: additive noise, dropout, and the contractive (Jacobian) wrapper."""

from keras_regs.layers.bernoulli_dropout import (
    BernoulliDropout,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)
from keras_regs.layers.contractive import Contractive
from keras_regs.layers.gaussian_noise import GaussianNoise

__all__ = [
    "BernoulliDropout",
    "Contractive",
    "GaussianNoise",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
]
