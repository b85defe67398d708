"""The agent's model from configuration: any OpenAI-compatible endpoint by base URL (vLLM,
Ollama, llama.cpp's server, OpenRouter, OpenAI) or Anthropic."""

from __future__ import annotations

from gpuwarden.config import AgentConfig
from gpuwarden.errors import GpuwardenError


def model_from_config(config: AgentConfig):
    if not config.model:
        raise GpuwardenError("agent.model is not set: the agent answers from its analyzers only")
    key = config.api_key()
    if config.provider == "anthropic":
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        if key is None:
            raise GpuwardenError("agent.provider anthropic needs a key: set agent.api_key_env "
                                 "or agent.api_key_file")
        return AnthropicModel(config.model, provider=AnthropicProvider(
            api_key=key, base_url=config.base_url))
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    if key is None and config.base_url is None:
        raise GpuwardenError("agent.model with OpenAI's API needs a key: set agent.api_key_env "
                             "or agent.api_key_file, or agent.base_url for a local server")
    # local servers (Ollama, vLLM without --api-key) take any key
    return OpenAIChatModel(config.model, provider=OpenAIProvider(
        base_url=config.base_url, api_key=key or "not-needed"))
