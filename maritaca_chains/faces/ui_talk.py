"""The UI's conversation tab (a ``history: thread`` chain, e.g. "Conversa"), in Gradio:
the caller's saved conversations (Nova conversa, Abrir, Excluir), the open one shown
where the session's history is, and Enviar running the tab's chain in it through the
same run as every tab (``ui_stream.run_into``: quotas, ledger, run log). Whose
conversations: the page request's access key (``security.caller_label``; the login
cookie counts as its key), as on ``/chat/threads``. Its data: ``ui_threads``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from langchain_core.runnables import Runnable

from ..security import caller_label
from ..threads import THREAD_ID, ThreadNotFound, ThreadStore
from .ui_run import Respond, gets_request
from .ui_stream import run_into
from .ui_threads import conversation, new_title, thread_choices

__all__ = ["Talk", "is_conversation", "talk_buttons", "talk_handler", "view_of"]


class Talk:
    """A conversation tab's own widgets: in the tab, the list of saved conversations and
    its buttons; where the session's history is (``view``, shown while the tab is), the
    open conversation (its id in the session's state) and its title."""

    def __init__(self, gr: Any, name: str) -> None:
        self.name = name
        self.threads = gr.Radio([], value=None, label="Suas conversas",
                                info=NO_TALKS,
                                elem_id=f"{name}-threads")
        with gr.Row():
            self.new = gr.Button("Nova conversa", size="sm", min_width=60,
                                 elem_id=f"{name}-new")
            self.open = gr.Button("Abrir", size="sm", min_width=60, elem_id=f"{name}-open")
            self.delete = gr.Button("Excluir", size="sm", variant="stop", min_width=60,
                                    elem_id=f"{name}-delete")
        # Excluir asks first (a deleted conversation cannot be brought back), here in the
        # page, not in a script's confirm(): the UI's CSP runs no code of ours
        with gr.Group(visible=False) as self.confirm:
            self.question = gr.Markdown("", padding=True, elem_id=f"{name}-question")
            with gr.Row():
                self.yes = gr.Button("Sim, excluir", size="sm", variant="stop",
                                     min_width=60, elem_id=f"{name}-delete-yes")
                self.no = gr.Button("Cancelar", size="sm", min_width=60,
                                    elem_id=f"{name}-delete-no")
        self.thread = gr.State("")  # the open conversation's id ("": a new one)
        self.doomed = gr.State("")  # the id Excluir asked about (the list may change)

    def view(self, gr: Any, visible: bool) -> None:
        self.title = gr.Markdown(NEW_TALK, visible=visible, elem_id=f"{self.name}-title")
        self.chat = gr.Chatbot(label="Conversa", show_label=False, height=520,
                               visible=visible, elem_id=f"{self.name}-conversation",
                               buttons=["copy"], feedback_options=None,
                               placeholder=EMPTY_TALK)


NEW_TALK = "**Nova conversa**: a primeira mensagem lhe dá o nome e a salva na lista."
EMPTY_TALK = ("Escreva a primeira mensagem e clique em Enviar: a conversa fica salva e o "
              "assistente lembra dela.")
LIST_INFO = "A mais recente primeiro (horário de Brasília): escolha uma e clique em Abrir."
NO_TALKS = "Nenhuma conversa salva ainda: a primeira mensagem enviada cria uma."


def _listing(gr: Any, choices: list[tuple[str, str]], value: str | None = None) -> Any:
    """The list of conversations, updated (its note says when it is empty)."""
    return gr.update(choices=choices, value=value, info=LIST_INFO if choices else NO_TALKS)


def is_conversation(chain: Runnable[Any, Any]) -> bool:
    """A ``history: thread`` chain: it runs in the thread its config names."""
    return any(spec.id == THREAD_ID for spec in chain.config_specs)


def _owner(request: Any) -> str:
    """Whose conversations: the access key of the page's request (the login cookie
    counts as its key), as on ``/chat/threads``."""
    return caller_label(request.request)


def talk_handler(respond: Respond, store: ThreadStore, name: str, names: list[str],
                  main: str, sends: int) -> Callable[..., AsyncIterator[list[Any]]]:
    """Enviar in a conversation tab: the same run as the other tabs' (``_run_into``),
    in the open conversation (a new one, named by the message, when none is open);
    then the list shows it first. Also yields ``[thread id, list, title, *fields]``."""
    async def run(request: Any, chat: list[Any] | None, thread_id: str, model: str | None,
                  temperature: float, max_tokens: float, *values: Any
                  ) -> AsyncIterator[list[Any]]:
        import gradio as gr

        fields = dict(zip(names, values, strict=True))
        message = str(fields.get(main) or "")
        owner, last, went = _owner(request), None, False
        title: Any = gr.update()
        created = bool(message.strip()) and not thread_id
        if created:  # the first message names a new conversation
            thread_id = await store.create(owner, new_title(message))
            chat, title = [], _title_line(new_title(message))
        async for out in run_into(respond, name, fields, list(chat or []), message, sends,
                                   request, model, temperature, max_tokens, thread_id):
            sent = out[2] == name  # under way: the message box is emptied for the next
            last = [*out, thread_id, gr.update(), title if sent else gr.update(),
                    *[("" if sent and n == main else gr.update()) for n in names]]
            went, title = went or sent, title if not sent else gr.update()
            yield last
        if created and not went:  # refused before sending: no empty conversation left
            await store.delete(owner, thread_id)
            thread_id = ""
        if last is not None and thread_id:
            choices = await thread_choices(store, owner)
            yield [*last[:-len(names) - 2], _listing(gr, choices, thread_id),
                   gr.update(), *[gr.update()] * len(names)]
        elif last is not None:
            yield [*last[:-len(names) - 3], thread_id, *last[-len(names) - 2:]]

    return gets_request(run)


def _title_line(title: str) -> str:
    return f"**Conversa aberta:** {title or 'Sem título'}"


def talk_buttons(gr: Any, demo: Any, talk: Talk, store: ThreadStore, status: Any
                 ) -> Callable[..., Any]:
    """The list of conversations (filled when the page loads) and its buttons."""
    async def listed(request: Any, open_id: str = "") -> Any:
        return _listing(gr, await thread_choices(store, _owner(request)), open_id or None)

    def new() -> list[Any]:
        return [[], "", NEW_TALK, gr.update(value=None), ""]

    async def opened(request: Any, chosen: str | None) -> list[Any]:
        if not chosen:
            return [gr.update(), gr.update(), gr.update(), gr.update(),
                    "**Atenção:** Escolha uma conversa na lista para abrir."]
        owner = _owner(request)
        try:
            thread = await store.get(owner, chosen)
        except ThreadNotFound:
            return [gr.update(), gr.update(), gr.update(),
                    _listing(gr, await thread_choices(store, owner)),
                    "**Atenção:** Esta conversa não existe mais: a lista foi atualizada."]
        return [conversation(thread), chosen, _title_line(thread["title"]), gr.update(),
                "Conversa aberta: a próxima mensagem que você enviar continua esta conversa."]

    async def asked(request: Any, chosen: str | None) -> list[Any]:
        """Excluir: the question, naming the conversation (nothing deleted yet)."""
        if not chosen:
            return [gr.update(visible=False), gr.update(), "", gr.update(),
                    "**Atenção:** Escolha uma conversa na lista para excluir."]
        owner = _owner(request)
        try:
            thread = await store.get(owner, chosen)
        except ThreadNotFound:
            return [gr.update(visible=False), gr.update(), "",
                    _listing(gr, await thread_choices(store, owner)),
                    "Esta conversa já não existia: a lista foi atualizada."]
        title = thread["title"] or "Sem título"
        return [gr.update(visible=True),
                f"**Excluir “{title}”?** Ela sai da lista e não pode ser recuperada.",
                chosen, gr.update(), ""]

    def kept() -> list[Any]:
        return [gr.update(visible=False), "", "Nada foi excluído: a conversa continua salva."]

    async def deleted(request: Any, doomed: str, open_id: str) -> list[Any]:
        """Sim, excluir: the conversation Excluir asked about is deleted."""
        owner = _owner(request)
        try:
            await store.delete(owner, doomed)
            line = "Conversa excluída."
        except ThreadNotFound:
            line = "Esta conversa já não existia: a lista foi atualizada."
        listing = _listing(gr, await thread_choices(store, owner))
        if doomed == open_id:  # the open one is gone: a new conversation starts
            return [[], "", NEW_TALK, listing, line, gr.update(visible=False), ""]
        return [gr.update(), gr.update(), gr.update(), listing, line,
                gr.update(visible=False), ""]

    for handler in (listed, opened, asked, deleted):  # Gradio passes the page's request here
        gets_request(handler)
    shown = [talk.chat, talk.thread, talk.title, talk.threads, status]
    demo.load(listed, inputs=[talk.thread], outputs=[talk.threads], api_visibility="private",
              queue=False)
    talk.new.click(new, outputs=shown, api_visibility="private", queue=False)
    talk.open.click(opened, inputs=[talk.threads], outputs=shown, api_visibility="private",
                    queue=False)
    talk.delete.click(asked, inputs=[talk.threads],
                      outputs=[talk.confirm, talk.question, talk.doomed, talk.threads, status],
                      api_visibility="private", queue=False)
    talk.no.click(kept, outputs=[talk.confirm, talk.doomed, status], api_visibility="private",
                  queue=False)
    talk.yes.click(deleted, inputs=[talk.doomed, talk.thread],
                   outputs=[*shown, talk.confirm, talk.doomed], api_visibility="private",
                   queue=False)
    # the chat's own trash button empties the view: a new conversation (none is deleted)
    talk.chat.clear(new, outputs=shown, api_visibility="private", queue=False)
    return listed  # the list again (inputs: the open conversation), e.g. after Parar


def view_of(gr: Any, name: str, talks: list[str]) -> Callable[[], list[Any]]:
    """What the right-hand column shows with ``name``'s tab open: the session's history,
    or the conversation tab's own conversation."""
    def view() -> list[Any]:
        return [gr.update(visible=name not in talks)] * 3 + [
            gr.update(visible=name == talk) for talk in talks for _ in (0, 1)]

    return view
