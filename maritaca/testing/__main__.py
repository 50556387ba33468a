"""``python -m maritaca.testing --port 0 --token-delay 0.033``: serve the emulator until
SIGTERM/SIGINT, for benchmarks and manual tests (``--help`` lists the options)."""

from ._cli import main

if __name__ == "__main__":
    main()
