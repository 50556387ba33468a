"""The server's words to people, in Brazilian Portuguese (default) and English: one catalogue.

Programs read an error's ``type`` (a stable English code: ``rate_limit``,
``access_key_required``...); people read its ``detail``/``message``, which is written
here, once per language. ``say(code, lang, **values)`` fills a message; ``language``
picks the language a request asked for (``Accept-Language``: English when the client
prefers ``en`` to ``pt``; pt-BR otherwise, the product's audience)::

    say("access_key_required", language(request.headers))

Add a message here (both languages) rather than writing one where it is raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["DEFAULT_LANGUAGE", "Language", "MESSAGES", "language", "say", "scope_language"]

Language = Literal["pt", "en"]
DEFAULT_LANGUAGE: Language = "pt"

MESSAGES: dict[str, dict[Language, str]] = {
    # -- who may call (security, request_guards)
    "access_key_required": {
        "pt": "Falta a chave de acesso, ou ela está errada: envie-a no cabeçalho X-API-Key "
              "ou Authorization: Bearer, ou entre uma vez no navegador pelo formulário em "
              "/login",
        "en": "Missing or wrong access key: send it as X-API-Key or Authorization: Bearer, "
              "or log in once in a browser with the form at /login"},
    "loopback_only": {
        "pt": "Este servidor só atende clientes desta máquina (loopback); defina "
              "MARITACA_CHAINS_API_KEYS para atender outros",
        "en": "This server only serves loopback clients; set MARITACA_CHAINS_API_KEYS to "
              "serve others"},
    "host_not_allowed": {
        "pt": "Este servidor não atende pelo nome {host}: inclua-o em "
              "MARITACA_CHAINS_ALLOWED_HOSTS",
        "en": "Host {host} is not one this server answers to (set "
              "MARITACA_CHAINS_ALLOWED_HOSTS)"},
    "cross_site_origin": {
        "pt": "Pedido de outro site recusado: a origem {origin} não é este servidor "
              "(permita-a com MARITACA_CHAINS_CORS_ORIGINS)",
        "en": "Cross-site request refused: Origin {origin} is not this server (allow it "
              "with MARITACA_CHAINS_CORS_ORIGINS)"},
    "cross_site_fetch": {
        "pt": "Pedido de outro site recusado (Sec-Fetch-Site)",
        "en": "Cross-site request refused (Sec-Fetch-Site)"},
    "key_in_url": {
        "pt": "Chaves nunca vão na URL (acabam em logs e no histórico do navegador): envie "
              "X-API-Key ou Authorization: Bearer, ou entre pelo formulário em /login",
        "en": "Keys never go in URLs (they end up in logs and browser history): send "
              "X-API-Key or Authorization: Bearer, or log in with the form at /login"},
    "json_body_required": {
        "pt": "Envie o corpo como JSON, com content-type: application/json",
        "en": "Send the body as JSON with content-type: application/json"},
    "login_form_required": {
        "pt": "Envie o formulário de login como application/x-www-form-urlencoded",
        "en": "Send the login form as application/x-www-form-urlencoded"},
    "redis_unavailable": {
        "pt": "O Redis está fora de alcance: o servidor não consegue falar com "
              "MARITACA_CHAINS_REDIS_URL agora, e este pedido precisa dele. Tente de novo em "
              "alguns segundos.",
        "en": "Redis is unavailable: the server cannot reach MARITACA_CHAINS_REDIS_URL right "
              "now, and this request needs it. Try again in a few seconds."},
    # -- resumable runs (runs.routes)
    "key_runs_full": {
        "pt": "Esta chave de acesso já tem execuções (runs) demais em andamento ({why}: cada "
              "chave ocupa no máximo MARITACA_CHAINS_RUN_KEY_SHARE das do servidor); espere "
              "uma terminar, ou cancele uma",
        "en": "Too many runs for this access key ({why}: each key may hold "
              "MARITACA_CHAINS_RUN_KEY_SHARE of the server's runs); wait for one to end, or "
              "cancel one"},
    "runs_full": {
        "pt": "Execuções (runs) demais em andamento agora ({why}); tente de novo em instantes",
        "en": "Too many runs right now ({why}); try again shortly"},
    "replay_too_long": {
        "pt": "Esta resposta é longa demais para ser reenviada desde o início ({why}): "
              "envie a mensagem de novo",
        "en": "This answer is too long to replay from its start ({why}); send the message "
              "again"},
    # why a run or an answer was cancelled (runs.wire.Reason; English in the logs)
    "cancel_reason.deleted": {"pt": "por um DELETE", "en": "cancelled by DELETE"},
    "cancel_reason.superseded": {"pt": "uma nova mensagem da conversa tomou o lugar dela",
                                 "en": "superseded by a new message in the chat"},
    "cancel_reason.no_reader": {"pt": "ninguém a leu por {seconds} s",
                                "en": "no reader for {seconds} s"},
    "cancel_reason.shutting_down": {"pt": "o servidor está parando",
                                    "en": "the server is shutting down"},
    "cancel_reason.cancelled": {"pt": "sem motivo registrado", "en": "cancelled"},
    "run_cancelled": {"pt": "A execução foi cancelada ({why}).",
                      "en": "The run was cancelled: {why}."},
    "run_shut_down": {
        "pt": "O servidor parou antes de a execução terminar (server_shutting_down): "
              "inicie-a de novo, outra réplica vai executá-la.",
        "en": "The server shut down before the run ended (server_shutting_down); start it "
              "again: another replica will run it."},
    "answer_cancelled": {"pt": "A resposta foi cancelada ({why}).",
                         "en": "The answer was cancelled: {why}."},
    "answer_shut_down": {
        "pt": "O servidor parou antes de a resposta terminar (server_shutting_down): envie "
              "a mensagem de novo, outra réplica vai respondê-la.",
        "en": "The server shut down before the answer ended (server_shutting_down); send "
              "the message again: another replica will answer it."},
    "run_not_found": {
        "pt": "Execução (run) não encontrada: id desconhecido, expirado, ou iniciado com "
              "outra chave",
        "en": "No such run: unknown, expired, or started with another key"},
    "bad_last_event_id": {
        "pt": "Last-Event-ID (ou last_event_id) deve ser o id de um evento que este stream "
              "enviou: um número inteiro, 0 ou mais",
        "en": "Last-Event-ID (or last_event_id) must be an event id this stream sent: a "
              "whole number, 0 or more"},
    # -- a run that failed (error_responses)
    "not_configured": {
        "pt": "Este servidor não tem modelo para responder: defina MARITACA_API_KEY (a API "
              "da Maritaca) ou instale o modelo embutido com `{command}` (compila o "
              "llama.cpp, alguns minutos), e reinicie o servidor",
        "en": "This server has no model to answer with: set MARITACA_API_KEY (Maritaca's "
              "API), or install the embedded model with `{command}` (it compiles "
              "llama.cpp, a few minutes), then restart the server"},
    "upstream": {
        "pt": "O modelo falhou ({type}): {reason}. Detalhe: {detail}",
        "en": "Upstream model failed ({type}): {detail}"},
    "upstream.rate_limit": {"pt": "pedidos demais; espere e tente de novo", "en": ""},
    "upstream.upstream_authentication": {
        "pt": "a Maritaca recusou a chave do servidor; confira MARITACA_API_KEY", "en": ""},
    "upstream.upstream_permission": {
        "pt": "a chave do servidor não dá acesso a este modelo; escolha outro", "en": ""},
    "upstream.context_too_long": {
        "pt": "o texto não cabe no contexto do modelo; encurte-o ou diminua max_tokens",
        "en": ""},
    "upstream.bad_request": {"pt": "o modelo recusou o pedido; revise os parâmetros",
                             "en": ""},
    "upstream.upstream_timeout": {"pt": "o modelo demorou demais; tente de novo", "en": ""},
    "upstream.upstream_unavailable": {
        "pt": "não foi possível falar com o modelo; confira se ele está no ar", "en": ""},
    "upstream.upstream_error": {"pt": "o serviço do modelo falhou; tente de novo mais tarde",
                                "en": ""},
    "upstream.upstream_stream_broken": {
        "pt": "o modelo interrompeu a resposta no meio; o texto recebido está incompleto",
        "en": ""},
    "invalid_input": {"pt": "Entrada inválida: {where}", "en": "Invalid input: {where}"},
    "internal": {"pt": "Erro interno do servidor: tente de novo; se persistir, veja o log "
                       "do servidor",
                 "en": "Internal Server Error"},
    # -- input limits (input_limits)
    "body_too_large": {
        "pt": "O corpo do pedido passa de {size} (MARITACA_CHAINS_MAX_BODY_BYTES; o "
              "formulário de login aceita {login} bytes): envie menos",
        "en": "The request body is over {size} (MARITACA_CHAINS_MAX_BODY_BYTES; the login "
              "form takes {login} bytes): send less"},
    "head_too_large": {
        "pt": "Os cabeçalhos do pedido (com a linha do pedido) passam de {limit} bytes "
              "(MARITACA_CHAINS_MAX_HEADER_BYTES): envie cabeçalhos menores",
        "en": "The request head (request line and headers) is over {limit} bytes "
              "(MARITACA_CHAINS_MAX_HEADER_BYTES): send smaller headers"},
    # -- this server's quotas per access key (quota_exceeded)
    "quota_exceeded.requests": {
        "pt": "Limite de pedidos desta chave de acesso ({limit}) atingido; ele se renova "
              "em {when} (daqui a {seconds} s)",
        "en": "Rate limit of {limit} for this access key reached; it resets at {when} "
              "(in {seconds} s)"},
    "quota_exceeded.tokens": {
        "pt": "Orçamento de tokens desta chave de acesso ({limit}, entrada + saída) "
              "esgotado; ele se renova em {when} (daqui a {seconds} s)",
        "en": "Token budget (input + output) of {limit} for this access key reached; it "
              "resets at {when} (in {seconds} s)"},
    # -- conversation threads (threads)
    "thread_not_found": {
        "pt": "Conversa {thread_id} não encontrada: ela não existe, foi apagada ou é de "
              "outra chave de acesso. Crie uma com POST /chat/threads",
        "en": "No conversation {thread_id}: unknown, deleted, or another access key's. "
              "Create one with POST /chat/threads"},
    "thread_busy": {
        "pt": "A conversa {thread_id} já está respondendo (execução {run_id}): espere ela "
              "terminar ou pare-a, e envie de novo",
        "en": "Conversation {thread_id} is already answering (run {run_id}): wait for it "
              "to end or stop it, then send again"},
    "threads_page": {
        "pt": "limit vai de 1 a {limit} e offset de 0 a {offset}",
        "en": "limit is 1 to {limit} and offset 0 to {offset}"},
    "truncated": {
        "pt": "a resposta chegou a {limit} e foi cortada; peça mais com "
              '{{"config": {{"configurable": {{"max_tokens": ...}}}}}}',
        "en": "the answer reached {limit} and was cut; ask for more with "
              '{{"config": {{"configurable": {{"max_tokens": ...}}}}}}'},
}


def say(code: str, lang: Language = DEFAULT_LANGUAGE, **values: object) -> str:
    """The message ``code`` in ``lang`` (pt-BR if that language has none), filled with
    ``values``. An unknown code is a programming error: KeyError."""
    texts = MESSAGES[code]
    return (texts.get(lang) or texts[DEFAULT_LANGUAGE]).format(**values)


def language(headers: Mapping[str, str] | str | None) -> Language:
    """The language a request asked for: ``"en"`` when its ``Accept-Language`` ranks
    English above Portuguese (or names English and not Portuguese), else ``"pt"``.
    Takes the request's headers or the header's value."""
    value = headers if isinstance(headers, str) or headers is None \
        else headers.get("accept-language")
    if not value:
        return DEFAULT_LANGUAGE
    best: dict[str, float] = {}
    for position, item in enumerate(value.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, number = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(number)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in ("pt", "en") and quality > 0:
            # earlier entries win ties, as browsers list them in order of preference
            best.setdefault(primary, quality - position * 1e-6)
    english, portuguese = best.get("en"), best.get("pt")
    if english is not None and (portuguese is None or english > portuguese):
        return "en"
    return DEFAULT_LANGUAGE


def scope_language(scope: Mapping[str, Any]) -> Language:
    """``language`` for an ASGI scope (its raw headers), for middleware."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"accept-language":
            return language(value.decode("latin-1"))
    return DEFAULT_LANGUAGE
