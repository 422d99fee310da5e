"""YAML recipes, shipped as package data so an installed wheel finds them."""
