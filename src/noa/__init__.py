"""noa: Neural Operator Agents trained against stochastic CNO rollouts."""

__version__ = "0.1.0"
