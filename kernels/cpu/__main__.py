"""Build the fused CPU ops now (make install runs this): `python -m kernels.cpu`."""
import sys
import time

from kernels.cpu import load, unavailable_reason

t0 = time.time()
mod = load(verbose="-v" in sys.argv)
if mod is None:
    print(f"fused CPU ops NOT built: {unavailable_reason()}", file=sys.stderr)
    sys.exit(1)
print(f"fused CPU ops ready ({time.time() - t0:.0f} s)")
