"""Chat templates: the model's own Jinja template (tokenizer_config.json or GGUF metadata),
rendered as transformers renders it."""
from __future__ import annotations


def render(template: str, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
    """The template applied to messages, with transformers' Jinja settings (trim and lstrip
    blocks, a sandbox, raise_exception)."""
    try:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:  # pragma: no cover - jinja2 is a dependency
        raise RuntimeError("chat templates need jinja2 (pip install jinja2)") from None
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **extra)
    except TemplateError as e:
        raise ValueError(f"the chat template failed: {e}") from None
