"""LCEL chain templates on ChatMaritaca: story, question answering, summarising.

    from chains import story_chain
    for chunk in story_chain.stream({"topic": "Brasil"}):
        print(chunk, end="", flush=True)

Each module-level chain uses ``ChatMaritaca()`` (key from ``MARITACA_API_KEY``); build
one on another model with ``build_story_chain(model=...)`` and friends, or change the
model per call with ``with_config(configurable={"model": "sabiazinho-4"})``. What a
client may configure, and within which limits, is ``CONFIGURABLE_KEYS``,
``TEMPERATURE_RANGE`` and ``MAX_TOKENS_RANGE``.
"""

from ._model import configurable_model, model_choices
from ._prompts import PromptFileError, load_prompt
from .limits import CONFIGURABLE_KEYS, DEFAULT_TEMPERATURE, MAX_TOKENS_RANGE, TEMPERATURE_RANGE
from .qa import QAInput, build_qa_chain
from .registry import CHAINS, ChainBuilder, ChainSpec, build_chains
from .story import StoryInput, build_story_chain
from .summarize import PROGRESS_EVENT, SummarizeInput, build_summarize_chain

story_chain = build_story_chain()
qa_chain = build_qa_chain()
summarize_chain = build_summarize_chain()

__all__ = [
    "CHAINS",
    "CONFIGURABLE_KEYS",
    "DEFAULT_TEMPERATURE",
    "MAX_TOKENS_RANGE",
    "PROGRESS_EVENT",
    "TEMPERATURE_RANGE",
    "ChainBuilder",
    "ChainSpec",
    "PromptFileError",
    "QAInput",
    "StoryInput",
    "SummarizeInput",
    "build_chains",
    "build_qa_chain",
    "build_story_chain",
    "build_summarize_chain",
    "configurable_model",
    "load_prompt",
    "model_choices",
    "qa_chain",
    "story_chain",
    "summarize_chain",
]
