"""gsmv: training verifiers to solve math word problems (Cobbe et al. 2021)."""

__version__ = "0.1.0"
