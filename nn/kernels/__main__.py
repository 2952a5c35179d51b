"""Build mantis's kernel library: ``python -m nn.kernels`` (scripts/install.sh runs it)."""
from . import build

print(f"built {build()}")
