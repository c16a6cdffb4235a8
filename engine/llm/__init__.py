"""LLM steps' building blocks: templates, model names, keys, retries and the litellm client.

Only `engine.llm.client` imports litellm, and only when the first LLM call is made.
"""
