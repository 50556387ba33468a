"""LangServe alone on our story chain: what serving the chain costs with none of ours.

    uvicorn --app-dir bench _langserve_app:app_factory --factory

A bare FastAPI app with LangServe's ``add_routes`` for the story chain
(``chains.build_chains`` on ``ChatMaritaca(base_url=MARITACA_BASE_URL,
api_key=MARITACA_API_KEY)``) and a ``/healthz`` for the benches. No middleware, guards,
run bookkeeping or settings of ours: against it, ``bench_request_start.py`` tells what
LangServe's request handling costs as deployed, and what our app adds on top of it.
Not a server to deploy.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from langserve import add_routes
from starlette.responses import PlainTextResponse

from chains import build_chains
from maritaca import ChatMaritaca


def app_factory() -> FastAPI:
    """For ``uvicorn _langserve_app:app_factory --factory``."""
    model = ChatMaritaca(api_key=os.environ["MARITACA_API_KEY"],
                         base_url=os.environ["MARITACA_BASE_URL"], model="sabia-4")
    app = FastAPI()
    app.add_api_route("/healthz", lambda: PlainTextResponse("ok"), methods=["GET"])
    add_routes(app, build_chains(model)["story"], path="/story")
    return app
