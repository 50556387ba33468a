"""The question-answering chain: answers from the given context, or says it can't.

    from chains import qa_chain
    qa_chain.invoke({"question": "Qual é a capital?", "context": "A capital do Brasil é Brasília."})

Its words are in ``prompts/qa.yaml``: the main messages when there is a context, the
``no_context`` variant when there is none.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableBranch
from pydantic import BaseModel, ConfigDict, Field

from ._inputs import Language, Text, coerce_input
from ._model import configurable_model
from ._parsers import InlineStrOutputParser
from ._prompts import load_prompt
from ._run import budgeted_chain


class QAInput(BaseModel):
    """A question, and optionally the context that holds its answer."""

    model_config = ConfigDict(extra="forbid")

    question: Text = Field(min_length=1, max_length=4_000, description="The question.",
                           examples=["Quando o Brasil se tornou independente?"])
    context: Text = Field(
        default="", max_length=100_000,
        description="Text to answer from; the answer then comes only from it, and says "
                    "plainly when the context does not hold it. Empty: general knowledge.")
    language: Text = Language


def build_qa_chain(model: BaseChatModel | None = None, *,
                   context_tokens: int | None = None) -> Runnable[Any, str]:
    """``QAInput | prompt | model | str``; ``model`` defaults to ``ChatMaritaca()``.

    ``context_tokens`` is accepted like every chain builder's; Q&A does not split.
    """
    prompt = load_prompt("qa")
    llm = configurable_model(model, max_tokens=prompt.largest_budget())
    parser = InlineStrOutputParser()
    inner = RunnableBranch[dict[str, str], str](
        (lambda values: not values["context"], prompt.template("no_context") | llm | parser),
        prompt.template() | llm | parser)

    def prepare(value: Any) -> tuple[dict[str, str], int]:
        qa = coerce_input(QAInput, value)
        return prompt.values(qa), prompt.budget(qa)

    return budgeted_chain(inner, prepare, model, name="qa", input_type=QAInput)
