"""Build mantis's kernel library: ``python -m nn.kernels`` (scripts/install.sh runs it)."""
from nn.kernels import build

print(f"built {build()}")
