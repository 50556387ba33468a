"""``python -m maritaca_chains serve``: the same as the ``maritaca-chains`` command."""

from .cli import main

main()
