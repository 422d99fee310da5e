"""Building blocks: heads and a CPU-capable synchronised BatchNorm."""
