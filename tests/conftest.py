import os

# Triton kernels run in the interpreter on machines without a GPU; this must be
# set before triton is first imported anywhere.
try:
    import torch
    _has_cuda = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")
