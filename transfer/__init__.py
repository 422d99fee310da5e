"""transfer: self-supervised pretraining (UniGrad and the methods it unifies) and transfer evaluation."""

__version__ = "0.1.0"
