"""``python -m crystalforge`` (used by ``torchrun -m crystalforge ...``)."""

from .cli import main

main()
