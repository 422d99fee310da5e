"""Method registry: every method in its original-loss ("loss") and gradient ("grad") forms."""
from . import asymmetric, contrastive, decorrelation, unigrad  # noqa: F401  (registration)
from .base import METHODS, Bank, Method, Views, build_method

__all__ = ["METHODS", "Bank", "Method", "Views", "build_method"]
