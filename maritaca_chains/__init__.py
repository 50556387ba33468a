"""maritaca_chains: the server that streams the chains over LangServe and its other faces.

Run it with ``maritaca-chains serve`` (installed) or ``python server.py`` (a clone), or
build the app yourself, on any chat model::

    from maritaca_chains import ServerSettings, create_app
    app = create_app(ServerSettings(ui=False))          # the configured backend
    app = create_app(model=ChatOpenAI(...))             # any BaseChatModel

Modules, one concern each: ``app`` (the factory), ``settings``, ``backend`` (which model
serves), ``security`` (access keys, login, caller labels), ``login_pages`` (the login
form and the browser's 401 page), ``request_guards`` (hosts, origins, content types;
``media_types``) and ``csp`` (page headers), ``request_rules`` (the typed dependencies
every face uses: caller, quotas, the run envelope), ``error_responses`` (an exception as
a client sees it), ``messages`` (the words people read, pt-BR and English),
``langserve_compat`` (where LangServe needs help, one module per workaround), ``ledger``
(one per run: tokens, cost, outcome, timing; it writes the run log line and ``metrics``
and charges ``quotas``), ``runs`` (resumable runs), ``pages`` (``/``, ``/healthz``,
``/docs``), ``gc_policy``, ``faces`` (plain text, WebSocket, UI, ``/v1``, AI SDK),
``lifecycle`` (``/livez``, ``/readyz``, the graceful drain at SIGTERM) and ``cli``.
"""

from .app import app_factory, create_app
from .settings import ServerSettings

__all__ = ["ServerSettings", "app_factory", "create_app"]
