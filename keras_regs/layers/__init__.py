"""Layers: additive noise and dropout."""

from keras_regs.layers.bernoulli_dropout import BernoulliDropout
from keras_regs.layers.gaussian_noise import GaussianNoise

__all__ = ["BernoulliDropout", "GaussianNoise"]
