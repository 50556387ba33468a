"""Run the maritaca-chains server from a clone: ``python server.py [--host H] [--port P]``.

The same as ``maritaca-chains serve`` (the installed command); the code lives in the
``maritaca_chains`` package. ``uvicorn server:app_factory --factory`` works too.
"""

import sys

from maritaca_chains import app_factory, create_app
from maritaca_chains.cli import main

__all__ = ["app_factory", "create_app"]

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
