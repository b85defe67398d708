"""The ops agent: deterministic analyzers first, an LLM (pydantic-ai) on top whose tools
call the control plane's services; actions only with a human's approval."""
