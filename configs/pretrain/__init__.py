"""Pretraining recipes."""
