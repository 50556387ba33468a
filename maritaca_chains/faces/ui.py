"""``/ui/``: the chains in a browser, one form per chain (when gradio is installed: the
``[ui]`` extra).

Each chain has a tab with its own fields (``/ui/?cadeia=<name>`` opens that chain's); the model (the backend's real choices),
temperature and token limit are shared. A conversation chain (``history: thread``: the
"Conversa" tab) also lists the caller's saved conversations (Nova conversa, Abrir,
Excluir: ``ui_talk``) and streams its answers into the open one. Answers stream into the session's history,
**Parar** stops a run (and its upstream request), errors are one pt-BR line under the
history. The runs themselves are :func:`~.ui_run.chat_fn`'s; this module only lays out
the page (``ui_stream`` turns a run's updates into Gradio's).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from langchain_core.runnables import Runnable

from chains import CHAINS, DEFAULT_TEMPERATURE, MAX_TOKENS_RANGE, TEMPERATURE_RANGE, ChainSpec

from ..ledger import RunAccounts
from ..login_pages import LoginRequired, login_required_html
from ..refusals import Refusal, refusal_json
from ..request_rules import current_caller
from ..threads import ThreadStore
from ._face import Face
from .gradio_idle_poll import slow_idle_poll
from .ui_run import Respond, chat_fn, gets_request
from .ui_stream import halt, run_into, stopped
from .ui_talk import Talk, is_conversation, talk_buttons, talk_handler, view_of
from .ui_text import BACKENDS, TINY_MODEL_NOTE, field_text

__all__ = ["chat_fn", "mount_ui"]

logger = logging.getLogger("maritaca_chains.faces")

UPLOAD_TYPES = [".txt", ".md"]
EXCERPT = 160  # characters of a long field shown in the history
CSS = """
#ui-status { min-height: 1.6em; }
#ui-status p { margin: 0; }
"""


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= EXCERPT:
        return text
    size = f"{len(text):,}".replace(",", ".")  # the thousands separator, pt-BR style
    return f"{text[:EXCERPT].rstrip()}… ({size} caracteres)"


def _request_line(title: str, labels: dict[str, str], fields: dict[str, Any]) -> str:
    """The history's line for what was asked: the chain's title and the filled fields."""
    shown = [f"{_short_label(labels[k])}: {_excerpt(str(v))}" for k, v in fields.items()
             if isinstance(v, str) and v.strip()]
    return f"**{title}** · " + " · ".join(shown)


def _short_label(label: str) -> str:
    """A field's label without its form note: "Contexto (opcional)" is "Contexto" once
    it was filled."""
    return label.removesuffix(" (opcional)")


def _read_upload(path: str | None) -> tuple[str | None, str]:
    """An uploaded .txt/.md file's text, or None and the pt-BR line saying what to fix."""
    if not path:
        return None, ""
    if Path(path).suffix.lower() not in UPLOAD_TYPES:
        return None, "Envie um arquivo .txt ou .md (texto simples)."
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return None, "O arquivo não está em UTF-8: salve-o como UTF-8 e envie de novo."
    if not text.strip():
        return None, "O arquivo está vazio: envie um arquivo com texto."
    return text, f"Arquivo carregado: {len(text):,} caracteres.".replace(",", ".")


def _build(chains: dict[str, Runnable[Any, str]], specs: dict[str, ChainSpec],
           model_choices: list[str], served_line: str, max_tokens_top: int,
           accounts: RunAccounts | None, store: ThreadStore | None = None) -> Any:
    import gradio as gr

    respond = chat_fn(chains, accounts)
    talks: dict[str, Talk] = {}
    tab_of: dict[str, Any] = {}
    first = next(iter(chains), "")
    # no telemetry and no version check (test_ui checks the UI contacts no host)
    with gr.Blocks(title="maritaca-chains", analytics_enabled=False) as demo:
        gr.Markdown("# maritaca-chains\nEscolha uma cadeia, preencha os campos e clique em "
                    "**Enviar**: a resposta chega aos poucos no histórico, e **Parar** a "
                    f"interrompe.\n\n{served_line}")
        # in the page, not in the session: Parar reads what the browser last got (the
        # running chain's name, "" when none runs)
        running = gr.Textbox("", visible=False, elem_id="ui-running")
        forms: list[tuple[str, list[str], list[Any], Any]] = []
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=360):
                with gr.Tabs() as tabs:
                    for name, chain in chains.items():
                        with gr.Tab(_title(specs, name), id=name,
                                    elem_id=f"tab-{name}") as tab_of[name]:
                            if store is not None and is_conversation(chain):
                                talks[name] = Talk(gr, name)
                            names, widgets = _form(gr, Face(name, chain), specs.get(name))
                            send = gr.Button("Enviar", variant="primary",
                                             elem_id=f"send-{name}")
                        forms.append((name, names, widgets, send))
                with gr.Accordion("Modelo e geração", open=True):
                    model = gr.Dropdown(model_choices, value=model_choices[0], label="Modelo",
                                        interactive=len(model_choices) > 1,
                                        elem_id="ui-model")
                    temperature = gr.Slider(*TEMPERATURE_RANGE, value=DEFAULT_TEMPERATURE,
                                            step=0.05, label="Temperatura",
                                            info="0 = mais previsível; mais alta = mais "
                                                 "criativa", elem_id="ui-temperature")
                    max_tokens = gr.Slider(0, max_tokens_top, value=0, step=1,
                                           label="Máximo de tokens",
                                           info="0 = automático (cabe no tamanho pedido)",
                                           elem_id="ui-max-tokens")
            with gr.Column(scale=3, min_width=420):
                heading = gr.Markdown("**Histórico desta sessão**", visible=first not in talks)
                history = gr.Chatbot(label="Histórico desta sessão", show_label=False,
                                     height=520, visible=first not in talks,
                                     elem_id="ui-history", buttons=["copy"],
                                     feedback_options=None,
                                     placeholder="As respostas desta sessão aparecem aqui.")
                for name, talk in talks.items():  # a conversation tab shows its own
                    talk.view(gr, visible=name == first)
                status = gr.Markdown("", elem_id="ui-status")
                with gr.Row():
                    stop = gr.Button("Parar", variant="stop", interactive=False,
                                     elem_id="ui-stop")
                    clear = gr.Button("Limpar histórico", variant="secondary",
                                      visible=first not in talks, elem_id="ui-clear")
        sends = [send for *_, send in forms]
        outputs = [history, status, running, stop, *sends]
        runs = []
        for name, names, widgets, send in forms:
            if name in talks and store is not None:
                talk = talks[name]
                runs.append(send.click(
                    talk_handler(respond, store, name, names, _main_field(specs, name, names),
                                  len(sends)),
                    inputs=[talk.chat, talk.thread, model, temperature, max_tokens, *widgets],
                    outputs=[talk.chat, status, running, stop, *sends, talk.thread,
                             talk.threads, talk.title, *widgets],
                    api_name=name, concurrency_limit=None, show_progress="hidden"))
                continue
            runs.append(send.click(
                _handler(respond, _title(specs, name), name, names,
                         dict(zip(names, (w.label for w in widgets),
                                                        strict=True)), len(sends)),
                inputs=[history, model, temperature, max_tokens, *widgets],
                outputs=outputs, api_name=name, concurrency_limit=None,
                show_progress="hidden"))
        # the run is cancelled first, then the history says where it stopped
        chats = [talk.chat for talk in talks.values()]
        halted = stop.click(gets_request(halt), cancels=runs, api_visibility="private", queue=False).then(
            stopped(len(sends), list(talks)), inputs=[history, running, *chats],
            outputs=[*outputs, *chats], api_visibility="private", queue=False)
        if store is not None:
            for talk in talks.values():  # a stopped conversation still joins the list
                halted.then(talk_buttons(gr, demo, talk, store, status), inputs=[talk.thread],
                            outputs=[talk.threads], api_visibility="private", queue=False)
        clear.click(lambda: ([], ""), outputs=[history, status], api_visibility="private", queue=False)
        views = [heading, history, clear, *[w for t in talks.values() for w in (t.title, t.chat)]]
        for name, tab in tab_of.items():
            tab.select(view_of(gr, name, list(talks)), outputs=views,
                       api_visibility="private", queue=False)
        demo.load(_tab_from_url(gr, list(chains), list(talks)), outputs=[tabs, *views],
                  api_visibility="private", queue=False)
    return demo


def _tab_from_url(gr: Any, names: list[str], talks: list[str]
                  ) -> Callable[[Any], list[Any]]:
    """On page load: the tab of the chain the URL names (``?cadeia=qa``), if any, and
    what the right-hand column shows with it."""
    def pick(request: Any) -> list[Any]:
        wanted = request.query_params.get("cadeia") if request is not None else None
        if wanted not in names:
            return [gr.update()] * (4 + 2 * len(talks))
        return [gr.Tabs(selected=wanted), *view_of(gr, wanted, talks)()]

    return gets_request(pick)


def _title(specs: dict[str, ChainSpec], name: str) -> str:
    return specs[name].title if name in specs else name


def _long_field(spec: ChainSpec | None) -> str | None:
    """The field a chain map-reduces (a long text): its form also takes a file."""
    strategy = spec.file.strategy if spec is not None and spec.file is not None else None
    return strategy.map_reduce.field if strategy is not None else None


def _form(gr: Any, face: Face, spec: ChainSpec | None = None) -> tuple[list[str], list[Any]]:
    """The widgets of a chain's own fields, generated from its input model: a choice is a
    radio, a boolean a checkbox, a number a number box, a text a text box (labels,
    placeholders and heights from the chain file); a field the chain map-reduces also
    takes an uploaded file. Fields the file marks ``hidden`` keep their defaults."""
    names, widgets = [], []
    for field, info in face.input_type.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("x-hidden"):
            continue
        text = field_text(face.name, field, face.input_type)
        options = typing.get_args(info.annotation) if typing.get_origin(
            info.annotation) is typing.Literal else ()
        element = f"{face.name}-{field}"
        default = None if info.is_required() else info.default
        if options:
            widget = gr.Radio(list(options), value=default, label=text.label, elem_id=element)
        elif info.annotation is bool:
            widget = gr.Checkbox(value=bool(default), label=text.label, elem_id=element)
        elif info.annotation is not str and _is_number(info.annotation):
            widget = gr.Number(value=default, label=text.label, elem_id=element,
                               precision=0 if _is_number(info.annotation) is int else None)
        else:
            value = default if isinstance(default, str) else ""
            widget = gr.Textbox(label=text.label, placeholder=text.placeholder,
                                value="" if value in ("livre", "auto") else value,
                                lines=text.lines, max_lines=max(text.lines, 20),
                                elem_id=element)
            if field == _long_field(spec):
                _upload(gr, widget, face.name)
        names.append(field)
        widgets.append(widget)
    return names, widgets


def _is_number(annotation: Any) -> type | None:
    """int or float for a number field (also behind ``Annotated`` limits), else None."""
    base = typing.get_args(annotation)[0] if typing.get_origin(
        annotation) is typing.Annotated else annotation
    return base if base in (int, float) else None


def _upload(gr: Any, target: Any, name: str) -> None:
    upload = gr.File(label="Ou envie um arquivo .txt ou .md", file_types=UPLOAD_TYPES,
                     type="filepath", height=110, elem_id=f"{name}-file")
    note = gr.Markdown("", elem_id=f"{name}-file-note")

    def load(path: str | None) -> tuple[Any, str]:
        text, line = _read_upload(path)
        return (gr.update() if text is None else text), line

    upload.upload(load, inputs=[upload], outputs=[target, note], api_visibility="private",
                  concurrency_limit=None)


def _main_field(specs: dict[str, ChainSpec], name: str, names: list[str]) -> str:
    return specs[name].main_field if name in specs else names[0]


def _handler(respond: Respond, title: str, name: str, names: list[str],
             labels: dict[str, str], sends: int) -> Callable[..., AsyncIterator[list[Any]]]:
    async def run(request: Any, history: list[Any] | None, model: str | None,
                  temperature: float, max_tokens: float, *values: Any
                  ) -> AsyncIterator[list[Any]]:
        fields = dict(zip(names, values, strict=True))
        async for out in run_into(respond, name, fields, list(history or []),
                                   _request_line(title, labels, fields), sends, request,
                                   model, temperature, max_tokens):
            yield out

    # Gradio passes the request that started the run (its key is charged)
    return gets_request(run)


def mount_ui(app: FastAPI, chains: dict[str, Runnable[Any, str]]) -> None:
    """Mount the UI at ``/ui/`` behind the access guard (``request_rules.current_caller``);
    each run is admitted by the caller's quotas where it starts (``ui_run``), not each of
    the page's calls, and kept in ledgers by ``app.state.accounts``. Without gradio, log
    why and mount nothing."""
    try:
        import gradio as gr
    except ImportError:
        logger.warning("gradio is not installed: /ui not mounted "
                       "(pip install 'maritaca-chains[ui]')")
        return
    served = getattr(app.state, "served", None)
    choices = list(served.model_choices) if served is not None else []
    model_name = served.model_name if served is not None else "?"
    line = (f"Servido por: **{BACKENDS.get(served.backend, served.backend)}**, modelo "
            f"`{model_name}`." if served is not None else "")
    if served is not None and served.local_backend is not None:
        line += f" {TINY_MODEL_NOTE}"
    top = min(MAX_TOKENS_RANGE[1], (served.context_tokens if served else None) or 8192)
    specs = getattr(app.state, "chain_specs", None) or CHAINS
    demo = _build(chains, specs, choices or [model_name], line, top,
                  getattr(app.state, "accounts", None), getattr(app.state, "thread_store", None))
    gr.mount_gradio_app(app, demo, path="/ui", ssr_mode=False, footer_links=[], css=CSS,
                        theme=_theme(gr),
                        app_kwargs={"dependencies": [Depends(current_caller)],
                                    # a browser without the key: the "entre primeiro" page
                                    "exception_handlers": {
                                        LoginRequired: login_required_html,
                                        Refusal: refusal_json}})
    slow_idle_poll(demo)


def _theme(gr: Any) -> Any:
    """Gradio's default theme with whole bold letters: its Source Sans Pro 600 file holds
    a few dozen glyphs ("A" and "B" of the Latin ones), so bold text mixed its "A" with
    a fallback font's letters. The complete 700 file serves every bold weight instead."""
    return gr.themes.Default(font=[gr.themes.LocalFont("Source Sans Pro", weights=(400, 700)),
                                   "ui-sans-serif", "system-ui", "sans-serif"])
