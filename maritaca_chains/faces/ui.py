"""``/ui/``: the chains in a browser, one form per chain (when gradio is installed: the
``[ui]`` extra).

Each chain has a tab with its own fields (``/ui/?cadeia=<name>`` opens that chain's); the model (the backend's real choices),
temperature and token limit are shared. Answers stream into the session's history,
**Parar** stops a run (and its upstream request), errors are one pt-BR line under the
history. The runs themselves are :func:`~.ui_run.chat_fn`'s; this module only lays out
the page and turns its updates into Gradio's.
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
from ..request_rules import admitted_caller
from ._face import Face
from .gradio_idle_poll import slow_idle_poll
from .ui_run import Respond, RunUpdate, chat_fn
from .ui_text import BACKENDS, TINY_MODEL_NOTE, field_text, run_footer

__all__ = ["chat_fn", "mount_ui"]

logger = logging.getLogger("maritaca_chains.faces")

UPLOAD_TYPES = [".txt", ".md"]
EXCERPT = 160  # characters of a long field shown in the history
NOTHING = "_(nenhum texto chegou)_"  # a run's answer when it ended before its first word
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
           accounts: RunAccounts | None) -> Any:
    import gradio as gr

    respond = chat_fn(chains, accounts)
    # no telemetry and no version check (test_ui checks the UI contacts no host)
    with gr.Blocks(title="maritaca-chains", analytics_enabled=False) as demo:
        gr.Markdown("# maritaca-chains\nEscolha uma cadeia, preencha os campos e clique em "
                    "**Enviar**: a resposta chega aos poucos no histórico, e **Parar** a "
                    f"interrompe.\n\n{served_line}")
        # in the page, not in the session: Parar reads what the browser last got
        running = gr.Checkbox(False, visible=False, elem_id="ui-running")
        forms: list[tuple[str, list[str], list[Any], Any]] = []
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=360):
                with gr.Tabs() as tabs:
                    for name, chain in chains.items():
                        with gr.Tab(_title(specs, name), id=name, elem_id=f"tab-{name}"):
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
                gr.Markdown("**Histórico desta sessão**")
                history = gr.Chatbot(label="Histórico desta sessão", show_label=False,
                                     height=520,
                                     elem_id="ui-history", buttons=["copy"],
                                     feedback_options=None,
                                     placeholder="As respostas desta sessão aparecem aqui.")
                status = gr.Markdown("", elem_id="ui-status")
                with gr.Row():
                    stop = gr.Button("Parar", variant="stop", interactive=False,
                                     elem_id="ui-stop")
                    clear = gr.Button("Limpar histórico", variant="secondary",
                                      elem_id="ui-clear")
        sends = [send for *_, send in forms]
        outputs = [history, status, running, stop, *sends]
        runs = []
        for name, names, widgets, send in forms:
            runs.append(send.click(
                _handler(respond, _title(specs, name), name, names,
                         dict(zip(names, (w.label for w in widgets),
                                                        strict=True)), len(sends)),
                inputs=[history, model, temperature, max_tokens, *widgets],
                outputs=outputs, api_name=name, concurrency_limit=None,
                show_progress="hidden"))
        # the run is cancelled first, then the history says where it stopped
        stop.click(None, cancels=runs, api_visibility="private", queue=False).then(
            _stopped(len(sends)), inputs=[history, running], outputs=outputs,
            api_visibility="private", queue=False)
        clear.click(lambda: ([], ""), outputs=[history, status], api_visibility="private", queue=False)
        demo.load(_tab_from_url(gr, list(chains)), outputs=[tabs], api_visibility="private",
                  queue=False)
    return demo


def _tab_from_url(gr: Any, names: list[str]) -> Callable[[Any], Any]:
    """On page load: the tab of the chain the URL names (``?cadeia=qa``), if any."""
    def pick(request: Any) -> Any:
        wanted = request.query_params.get("cadeia") if request is not None else None
        return gr.Tabs(selected=wanted) if wanted in names else gr.update()

    pick.__annotations__["request"] = gr.Request  # how Gradio knows to pass the request
    return pick


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


def _buttons(gr: Any, running: bool, sends: int) -> list[Any]:
    return [gr.update(interactive=running)] + [gr.update(interactive=not running)] * sends


def _handler(respond: Respond, title: str, name: str, names: list[str],
             labels: dict[str, str], sends: int) -> Callable[..., AsyncIterator[list[Any]]]:
    async def run(request: Any, history: list[Any] | None, model: str | None,
                  temperature: float, max_tokens: float, *values: Any
                  ) -> AsyncIterator[list[Any]]:
        import gradio as gr

        history = list(history or [])
        fields = dict(zip(names, values, strict=True))
        update, added = RunUpdate(), False
        async for update in respond(name, fields, model=model, temperature=temperature,
                                    max_tokens=int(max_tokens or 0) or None,
                                    connection=getattr(request, "request", None)):
            if not update.sent:  # refused before sending: the history stays as it was
                yield [gr.update(), f"**Atenção:** {update.error}", False, *_buttons(gr, False, sends)]
                return
            if not update.done:
                if not added:  # the run went out: it joins the history
                    added = True
                    history += [{"role": "user", "content": _request_line(title, labels, fields)},
                                {"role": "assistant", "content": ""}]
                history[-1] = {"role": "assistant", "content": update.answer}
                yield [history, update.status, True, *_buttons(gr, True, sends)]
        history[-1] = {"role": "assistant", "content": update.answer or NOTHING}
        footer = (f"Não concluída: {update.error}" if update.error else
                  run_footer(update.model_name, update.tokens, update.cost_brl, update.cut))
        history.append({"role": "assistant", "content": f"_{footer}_"})
        line = f"**Atenção:** {update.error}" if update.error else update.status
        yield [history, line, False, *_buttons(gr, False, sends)]

    import gradio as gr

    # Gradio passes the request that started the run (its key is charged) to a positional
    # parameter annotated gr.Request; resolved here, as gradio is imported lazily
    run.__annotations__["request"] = gr.Request
    return run


def _stopped(sends: int) -> Callable[[list[Any] | None, bool], list[Any]]:
    def stop(history: list[Any] | None, running: bool) -> list[Any]:
        import gradio as gr

        history = list(history or [])
        if not running:
            return [gr.update(), gr.update(), False, *_buttons(gr, False, sends)]
        if history and history[-1].get("role") == "assistant":
            history[-1] = {"role": "assistant", "content": history[-1].get("content") or NOTHING}
        history.append({"role": "assistant", "content": "_interrompida com Parar_"})
        return [history, "Interrompida: o que já tinha chegado ficou no histórico.", False,
                *_buttons(gr, False, sends)]

    return stop


def mount_ui(app: FastAPI, chains: dict[str, Runnable[Any, str]]) -> None:
    """Mount the UI at ``/ui/`` behind the request rules (every POST admitted as a
    request of the caller's key: ``request_rules.admitted_caller``); its runs are kept
    in ledgers by ``app.state.accounts``. Without gradio, log why and mount nothing."""
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
                  getattr(app.state, "accounts", None))
    gr.mount_gradio_app(app, demo, path="/ui", ssr_mode=False, footer_links=[], css=CSS,
                        theme=_theme(gr),
                        app_kwargs={"dependencies": [Depends(admitted_caller)],
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
