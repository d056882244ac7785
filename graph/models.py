"""Which chat model drives the graph: the offline analyst unless an LLM is configured."""

import os

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel

from graph.analyst import OfflineAnalyst
from graph.configuration import Configuration
from graph.prompts import with_context


def chat_model(settings: Configuration) -> BaseChatModel:
    if not settings.uses_llm:
        return OfflineAnalyst()
    from langchain_openai import ChatOpenAI  # imported lazily: the offline path never needs it

    return ChatOpenAI(
        model=settings.model,
        base_url=settings.base_url,
        api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
        temperature=settings.temperature,
        use_responses_api=False,
        stream_usage=True,
    )


def ask_structured(
    schema: type[BaseModel],
    system: str,
    task: str,
    context: dict,
    settings: Configuration,
    config: RunnableConfig | None = None,
) -> BaseModel:
    """One structured answer from the configured model, validated by `schema`."""
    messages = [SystemMessage(system), HumanMessage(with_context(task, context))]
    return chat_model(settings).with_structured_output(schema).invoke(messages, config)
