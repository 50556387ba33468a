"""``/ui/``: the Gradio chat in a browser (when gradio is installed: the ``[ui]`` extra)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import Depends, FastAPI
from langchain_core.runnables import Runnable

from chains import CHAINS

from ..error_responses import describe_error
from ._face import Face

__all__ = ["chat_fn", "mount_ui"]

logger = logging.getLogger("maritaca_chains.faces")


def chat_fn(chains: dict[str, Runnable[Any, str]]
            ) -> Callable[[str, list[Any], str], AsyncIterator[str]]:
    """The streaming function the Gradio chat calls: ``(message, history, chain_name)``
    yields the growing answer. Gradio's Stop cancels it, which closes the upstream stream."""
    faces = {name: Face(name, chain) for name, chain in chains.items()}

    async def respond(message: str, history: list[Any], chain_name: str) -> AsyncIterator[str]:
        import gradio as gr

        face = faces[chain_name]
        answer = ""
        try:
            async with aclosing(face.chunks(face.parse(message))) as chunks:
                async for chunk in chunks:
                    answer += chunk
                    yield answer
        except Exception as exc:
            logger.error("/ui run failed: %s: %s", type(exc).__name__, exc)
            raise gr.Error(describe_error(exc)["message"]) from exc

    return respond


def mount_ui(app: FastAPI, chains: dict[str, Runnable[Any, str]],
              check: Callable[..., Any]) -> None:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before the import: no phoning home
    try:
        import gradio as gr
    except ImportError:
        logger.warning("gradio is not installed: /ui not mounted "
                       "(pip install 'maritaca-chains[ui]')")
        return
    choices = [(CHAINS[n].title if n in CHAINS else n, n) for n in chains]
    demo = gr.ChatInterface(
        chat_fn(chains), title="maritaca-chains",
        description="Each message is a fresh run of the chosen chain; Stop stops it.",
        additional_inputs=[gr.Dropdown(choices, value=choices[0][1], label="Chain")],
        additional_inputs_accordion=gr.Accordion("Chain", open=True),
        analytics_enabled=False, concurrency_limit=None, api_name="chat")
    gr.mount_gradio_app(app, demo, path="/ui", ssr_mode=False,
                        app_kwargs={"dependencies": [Depends(check)]})
