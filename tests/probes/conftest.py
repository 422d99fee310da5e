"""Probe tests share 2 CPU cores with other jobs: one thread each."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
try:
    import faiss  # noqa: E402

    faiss.omp_set_num_threads(1)
except ImportError:
    pass
