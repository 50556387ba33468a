"""The question-answering chain: answers from the given context, or says it can't.

    from chains import qa_chain
    qa_chain.invoke({"question": "Qual é a capital?", "context": "A capital do Brasil é Brasília."})
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import BaseModel, ConfigDict, Field

from ._inputs import Language, coerce_input
from ._model import configurable_model
from ._parsers import InlineStrOutputParser
from ._prompts import load_prompt


class QAInput(BaseModel):
    """A question, and optionally the context that holds its answer."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4_000, description="The question.",
                          examples=["Quando o Brasil se tornou independente?"])
    context: str = Field(
        default="", max_length=100_000,
        description="Text to answer from; the answer then comes only from it, and says "
                    "plainly when the context does not hold it. Empty: general knowledge.")
    language: str = Language


def _variables(value: Any) -> dict[str, str]:
    qa = coerce_input(QAInput, value)
    prompt = load_prompt("qa")
    context = (prompt.context_template or "").replace("{context}", qa.context) \
        if qa.context.strip() else (prompt.no_context or "")
    return {"question": qa.question, "context": context, "language": qa.language}


def build_qa_chain(model: BaseChatModel | None = None) -> Runnable[Any, str]:
    """``QAInput | prompt | model | str``; ``model`` defaults to ``ChatMaritaca()``."""
    chain = (RunnableLambda(_variables, name="qa_input") | load_prompt("qa").template()
             | configurable_model(model) | InlineStrOutputParser())
    return chain.with_types(input_type=QAInput, output_type=str)
