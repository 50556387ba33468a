"""The pages that run no model: the landing page ``/``, ``/healthz``, offline API docs and
``/favicon.ico``.

``/`` (``templates/index.html``, Brazilian Portuguese) says which backend and model
serve and whether they answer, and gives every chain with links and copy-paste
``curl -N`` and ``RemoteRunnable`` snippets at the address the browser used (with an
``X-API-Key: SUA_CHAVE`` header to fill in when the server has access keys). ``/docs``
(Swagger UI) loads its JavaScript and CSS from this server (the ``fastapi-offline``
package's files), never from a CDN: it works offline. There is no ``/redoc``: ReDoc
fetches its logo from a CDN, and Swagger UI says the same.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib import resources
from string import Template
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from chains import CHAINS, ChainSpec
from maritaca import open_upstreams
from maritaca.local import INSTALL_COMMAND

from .backend import ServedModel
from .login_pages import site_style
from .messages import say

__all__ = ["DOCS_ASSETS", "add_pages"]

DOCS_ASSETS = "/docs-assets"  # where Swagger UI's files are served

_BACKENDS = {"local": "modelo embutido (offline)", "maritaca": "API da Maritaca",
             "custom": "modelo próprio", "none": "nenhum instalado"}
_TINY_NOTE = ("O modelo embutido (SmolLM2-135M-Instruct, via llama.cpp) é minúsculo: mostra "
              "que o streaming funciona, não o que o Sabiá sabe fazer. Defina "
              "<code>MARITACA_API_KEY</code> para usar a API da Maritaca.")


KEY_PLACEHOLDER = "SUA_CHAVE"  # in the snippets of a server with access keys


def add_pages(app: FastAPI, served: ServedModel, *, ui: bool,
              specs: dict[str, ChainSpec] | None = None, keys: bool = False) -> None:
    """``/healthz`` (JSON), ``/`` (the landing page) and the offline ``/docs`` for
    ``app`` (create it with ``docs_url=None, redoc_url=None``); ``specs`` are the
    served chains (default: the built-ins)."""
    chains = CHAINS if specs is None else specs

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, Any]:
        """Which backend and model serve (never the key), the models clients may choose,
        the chains with their versions (a short hash of each chain's file), and how many
        upstream streams this process has open (zero when none runs)."""
        return {**_health(served), "chains": [
            {"name": spec.name, "version": spec.version, "output": spec.output_kind}
            for spec in chains.values()], "open_upstream_streams": open_upstreams()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> str:
        return landing_page(served, base_url=_base_url(request),
                            root=request.scope.get("root_path", ""), ui=ui, specs=chains,
                            keys=keys)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(_favicon(), media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})

    _add_docs(app)


@cache
def _favicon() -> bytes:
    return (resources.files("maritaca_chains") / "templates" / "favicon.ico").read_bytes()


def _health(served: ServedModel) -> dict[str, Any]:
    health = served.health()
    if served.local_backend is not None and not served.local_backend.running:
        health["status"] = "down"  # the llama.cpp child process is not running
    return health


def _base_url(request: Request) -> str:
    """The server's address as the client reached it (proxy prefix included)."""
    return str(request.base_url).rstrip("/")


@cache
def _template() -> Template:
    text = (resources.files("maritaca_chains") / "templates" / "index.html").read_text("utf-8")
    return Template(text)


def landing_page(served: ServedModel, *, base_url: str, root: str = "", ui: bool,
                 specs: dict[str, ChainSpec] | None = None, keys: bool = False) -> str:
    """The landing page's HTML for a server reached at ``base_url`` (the snippets' address;
    links are relative to ``root``, the path a proxy mounts the app at). ``keys``: the
    server has access keys, so the snippets send one and the page says how to log in."""
    health = _health(served)
    up = health["status"] == "ok"
    chains = "\n".join(_chain_card(spec, base_url, root, ui, keys)
                       for spec in (CHAINS if specs is None else specs).values())
    return _template().substitute(
        backend=html.escape(_BACKENDS.get(served.backend, served.backend)),
        model=html.escape(served.model_name),
        style=site_style(), health_class="up" if up else "down",
        health="no ar" if up else "fora do ar",
        base_url=html.escape(base_url), root=html.escape(root),
        note=_note(served) + (_keys_note(root) if keys else ""),
        ui_link=(f'<a class="button primary" href="{html.escape(root)}/ui/">'
                 f"Abrir a interface de chat</a>") if ui else "",
        chains=chains,
        clients=_clients(next(iter((CHAINS if specs is None else specs).values()), None),
                         base_url, keys))


def _note(served: ServedModel) -> str:
    if served.backend == "none":
        return f'<p class="note">{html.escape(say("not_configured", command=INSTALL_COMMAND))}.</p>'
    return f'<p class="note">{_TINY_NOTE}</p>' if served.local_backend is not None else ""


def _keys_note(root: str) -> str:
    return ('<p class="note">Este servidor pede uma chave de acesso. Programas a enviam no '
            f"cabeçalho <code>X-API-Key</code> (troque <code>{KEY_PLACEHOLDER}</code> nos "
            "exemplos abaixo pela sua); no navegador, "
            f'<a href="{html.escape(root)}/login">entre uma vez</a> para abrir a interface '
            "de chat e os playgrounds.</p>")


def _chain_card(spec: ChainSpec, base_url: str, root: str, ui: bool, keys: bool) -> str:
    url = f"{base_url}/{spec.name}"
    example = json.dumps(spec.example, ensure_ascii=False)
    body = example.replace("'", "'\\''")  # inside single quotes in the shell
    key_header = f"  -H 'X-API-Key: {KEY_PLACEHOLDER}' \\\n" if keys else ""
    curl = (f"curl -N {url}/text \\\n  -H 'content-type: application/json' \\\n"
            f"{key_header}  -d '{body}'")
    client = (f'RemoteRunnable("{url}/", headers={{"X-API-Key": "{KEY_PLACEHOLDER}"}})'
              if keys else f'RemoteRunnable("{url}/")')
    python = (f"from langserve import RemoteRunnable\n\n"
              f"{spec.name} = {client}\n"
              f"for chunk in {spec.name}.stream({example}):\n"
              f'    print(chunk, end="", flush=True)')
    here = html.escape(root)
    links = [f'<a class="button" href="{here}/{spec.name}/playground/">Playground</a>']
    if ui:
        links.append(f'<a class="button" href="{here}/ui/?cadeia={spec.name}">'
                     "Interface de chat</a>")
    return (f'<article class="chain" id="{spec.name}" data-testid="chain-{spec.name}">'
            f"<h3>{html.escape(spec.title)}<code>/{spec.name}</code></h3>"
            f"<p>{html.escape(spec.description)}</p>"
            f'<div class="links">{"".join(links)}</div>'
            f"{_snippet('Terminal (curl)', curl)}{_snippet('Python (LangServe)', python)}"
            f"</article>")


def _clients(spec: ChainSpec | None, base_url: str, keys: bool) -> str:
    """The OpenAI-compatible ``/v1`` and the AI SDK's ``/<cadeia>/ai-sdk``, with a snippet
    each for the page's first chain."""
    if spec is None:
        return ""
    key = KEY_PLACEHOLDER if keys else "qualquer-texto"
    text = str(spec.example.get(spec.main_field, "Olá!"))
    message = json.dumps({"role": "user", "content": text}, ensure_ascii=False)
    python = (f"from openai import OpenAI\n\n"
              f'client = OpenAI(base_url="{base_url}/v1", api_key="{key}")\n'
              f"stream = client.chat.completions.create(\n"
              f'    model="{spec.name}", messages=[{message}], stream=True)\n'
              f"for chunk in stream:\n"
              f"    if chunk.choices and chunk.choices[0].delta.content:\n"
              f'        print(chunk.choices[0].delta.content, end="", flush=True)')
    js = ['import { useChat } from "@ai-sdk/react";', 'import { DefaultChatTransport } from "ai";',
          "", "const { messages, sendMessage } = useChat({",
          "  transport: new DefaultChatTransport({", f'    api: "{base_url}/{spec.name}/ai-sdk",',
          *([f'    headers: {{ Authorization: "Bearer {key}" }},'] if keys else []),
          "  }),", "  resume: true,  // retoma a resposta depois de recarregar a página", "});"]
    return ('<section class="clients" data-testid="clients"><h2>Clientes que você já usa</h2>'
            "<p>A API compatível com a OpenAI em <code>/v1</code> atende os SDKs "
            "<code>openai</code>, o <code>ChatOpenAI</code> do LangChain e o Open WebUI: "
            "o <code>model</code> é o nome de uma cadeia ou um modelo do backend "
            "(<code>/v1/models</code> lista todos). O <code>useChat</code> do Vercel AI SDK "
            "conversa com <code>/&lt;cadeia&gt;/ai-sdk</code>.</p>"
            f"{_snippet('Python (SDK da OpenAI)', python)}"
            f"{_snippet('React (Vercel AI SDK)', chr(10).join(js))}</section>")


def _snippet(label: str, code: str) -> str:
    return (f'<div class="snippet"><div class="label">{label}</div>'
            f'<button class="copy" type="button">Copiar</button>'
            f"<pre><code>{html.escape(code)}</code></pre></div>")


def _add_docs(app: FastAPI) -> None:
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} · documentação da API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")
