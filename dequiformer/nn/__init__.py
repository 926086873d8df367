"""Network building blocks: radial functions, SO(2) convolution, attention, FFN, norms, dropout."""
from .activations import GateActivation, S2Activation, SeparableS2Activation, SmoothLeakyReLU
from .attention import SO2EquivariantGraphAttention
from .dropout import EquivariantDropout, GraphDropPath, RecurrentDropout
from .edge_degree import EdgeDegreeEmbedding
from .feed_forward import FeedForwardNetwork
from .norms import build_norm
from .radial import GaussianRadialBasis, PolynomialEnvelope, RadialMLP
from .so2_conv import SO2Convolution

__all__ = [
    "EdgeDegreeEmbedding", "EquivariantDropout", "FeedForwardNetwork", "GateActivation",
    "GaussianRadialBasis", "GraphDropPath", "PolynomialEnvelope", "RadialMLP", "RecurrentDropout",
    "S2Activation", "SO2Convolution", "SO2EquivariantGraphAttention", "SeparableS2Activation",
    "SmoothLeakyReLU", "build_norm",
]
