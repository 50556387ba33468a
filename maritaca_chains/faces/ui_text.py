"""The UI's words, in Brazilian Portuguese: field labels, status lines and error lines.

Errors are rendered from ``describe_error``'s payload (the one exception mapping), as
one line that says what to fix: never a pydantic URL, a traceback or an English message.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..ledger import format_brl

__all__ = ["BACKENDS", "TINY_MODEL_NOTE", "FieldText", "blank_field", "cut_note", "error_line",
           "field_text", "progress_line", "run_footer"]


class FieldText:
    """How one input field is shown: label, placeholder and text-box height."""

    def __init__(self, label: str, placeholder: str = "", lines: int = 1) -> None:
        self.label, self.placeholder, self.lines = label, placeholder, lines


_COMMON = {"language": "Idioma", "length": "Tamanho", "format": "Formato",
           "text": "Texto", "question": "Pergunta", "topic": "Tema"}

BACKENDS = {"maritaca": "API da Maritaca", "local": "modelo embutido (offline)",
            "custom": "modelo configurado no servidor", "none": "nenhum modelo instalado"}
TINY_MODEL_NOTE = ("O modelo embutido (SmolLM2-135M) é minúsculo: mostra que o streaming "
                   "funciona, não o que o Sabiá sabe fazer. Defina `MARITACA_API_KEY` no "
                   "servidor para usar a Maritaca.")


def field_text(chain: str, field: str, input_type: type[BaseModel] | None = None) -> FieldText:
    """The field's label, placeholder and height, as its chain file writes them
    (``label``, ``placeholder``, ``lines``: the input model's title and schema extras);
    else its name, capitalised."""
    info = input_type.model_fields.get(field) if input_type is not None else None
    if info is None:
        return FieldText(_COMMON.get(field, field.capitalize()))
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    lines = extra.get("x-lines", 1)
    return FieldText(info.title or _COMMON.get(field, field.capitalize()),
                     str(extra.get("x-placeholder", "")),
                     lines if isinstance(lines, int) else 1)


def blank_field(chain: str, field: str, input_type: type[BaseModel] | None = None) -> str:
    return f"Preencha o campo «{field_text(chain, field, input_type).label}» antes de enviar."


def _max_length(input_type: type[BaseModel] | None, field: str) -> int | None:
    if input_type is None:
        return None
    schema = input_type.model_json_schema().get("properties", {}).get(field, {})
    limit = schema.get("maxLength")
    return limit if isinstance(limit, int) else None


def _invalid_field(chain: str, item: dict[str, Any], input_type: type[BaseModel] | None) -> str:
    names = [part for part in item.get("loc", []) if isinstance(part, str)
             and part not in ("input", "body")]
    field = names[-1] if names else ""
    label = field_text(chain, field, input_type).label if field else "entrada"
    kind = item.get("type", "")
    if kind in ("missing", "string_too_short") or (kind == "value_error"
                                                    and "whitespace" in item.get("msg", "")):
        return f"Preencha o campo «{label}» antes de enviar."
    if kind == "string_too_long":
        limit = _max_length(input_type, field)
        most = f" (no máximo {limit:,} caracteres)".replace(",", ".") if limit else ""
        return f"O campo «{label}» está longo demais{most}: encurte-o e envie de novo."
    if kind in ("literal_error", "enum"):
        return f"Escolha uma das opções do campo «{label}»."
    if kind == "extra_forbidden":
        return f"O campo «{label}» não existe nesta cadeia: tire-o do pedido."
    return f"Revise o campo «{label}»: o valor não é aceito."


_UPSTREAM = {
    "not_configured": "O servidor não tem modelo para responder: defina `MARITACA_API_KEY` "
                      "ou instale o modelo embutido (`maritaca-chains[local]`) e reinicie-o.",
    "upstream_authentication": "A Maritaca recusou a chave de API: confira "
                               "`MARITACA_API_KEY` no servidor.",
    "upstream_permission": "A chave de API não tem acesso a este modelo: escolha outro modelo.",
    "context_too_long": "O texto passa do que o modelo consegue ler de uma vez: encurte-o "
                        "ou escolha um modelo com mais contexto.",
    "bad_request": "O modelo recusou o pedido: revise o modelo, a temperatura e o máximo "
                   "de tokens.",
    "upstream_timeout": "O modelo demorou demais para responder: tente de novo em instantes.",
    "upstream_unavailable": "Não foi possível falar com o modelo: confira se o serviço do "
                            "modelo está no ar e tente de novo.",
    "upstream_error": "O serviço do modelo falhou: tente de novo em instantes.",
    "upstream_stream_broken": "O modelo interrompeu a resposta no meio: tente de novo.",
}

_THREADS = {  # a conversation's refusals (threads), as the Conversa tab says them
    "thread_busy": "Esta conversa ainda está respondendo à mensagem anterior: espere a "
                   "resposta terminar e envie de novo.",
    "thread_not_found": "Esta conversa não existe mais (foi excluída, ou é de outra chave "
                        "de acesso): abra outra na lista ou comece uma nova.",
}


def error_line(chain: str, error: dict[str, Any],
               input_type: type[BaseModel] | None = None) -> str:
    """One pt-BR line for ``describe_error``'s payload, saying what to fix."""
    kind = error.get("type", "")
    if kind == "rate_limit":
        wait = error.get("retry_after")
        when = f"espere {wait:g} s" if isinstance(wait, int | float) else "espere um pouco"
        return f"O modelo recebeu pedidos demais: {when} e envie de novo."
    if kind == "quota_exceeded":  # this server's limit for the key: when it renews
        return f"{error['message']}: espere e envie de novo."
    if kind == "redis_unavailable":  # the quotas' Redis: the message says what to do
        return str(error["message"])
    if kind in _UPSTREAM:
        return _UPSTREAM[kind]
    if kind in _THREADS:
        return _THREADS[kind]
    if kind == "invalid_input":
        if error.get("errors"):
            return _invalid_field(chain, error["errors"][0], input_type)
        return ("O pedido não pôde ser atendido com estas escolhas: tente um máximo de "
                "tokens menor ou outro modelo.")
    return "Algo deu errado no servidor: tente de novo; se persistir, veja o log do servidor."


def progress_line(progress: dict[str, Any]) -> str:
    """A long summary's progress (a ``summarize_progress`` event's data)."""
    done, total = progress.get("done", 0), progress.get("total", 0)
    stage = f" (etapa {progress['round']})" if progress.get("round", 1) > 1 else ""
    return (f"Texto longo: resumindo por partes{stage}, {done} de {total} prontas; "
            "depois vem o resumo final…")


def cut_note(max_tokens: int | None) -> str:
    limit = f" de {max_tokens} tokens" if max_tokens else " de tokens"
    return (f"A resposta foi cortada no limite{limit}: aumente «Máximo de tokens» para "
            "recebê-la inteira.")


def run_footer(model_name: str | None, tokens: int | None, cost_brl: float | None,
               cut: bool) -> str:
    """The line under an answer in the history: who answered, its size and cost."""
    parts = [f"respondido por {model_name}" if model_name else "concluído"]
    if tokens:
        parts.append(f"{tokens} tokens")
    if cost_brl is not None:
        parts.append(f"custo estimado {format_brl(cost_brl)}")
    if cut:
        parts.append("cortada no limite de tokens")
    return " · ".join(parts)
