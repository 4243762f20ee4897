"""Tokenization with Hugging Face ``tokenizers`` (tokenizer.json); no hand-written BPE."""
from __future__ import annotations

import json
from pathlib import Path

from fastlm.chat import render, select


def chat_templates(folder: Path, in_config, cfg: Path):
    """The folder's chat template: a str, a dict of named ones, or None."""
    named: dict = {}
    if isinstance(in_config, list):  # [{"name": ..., "template": ...}, ...]
        for i, t in enumerate(in_config):
            if not (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)):
                raise ValueError(f"{cfg}: chat_template[{i}] must be {{'name': str, 'template': str}}")
            named[t["name"]] = t["template"]
    elif isinstance(in_config, str):
        named["default"] = in_config
    elif in_config is not None:
        raise ValueError(f"{cfg}: chat_template must be a string or a list of named templates, "
                         f"got {type(in_config).__name__}")
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        named["default"] = jinja.read_text(encoding="utf-8")
    more = folder / "additional_chat_templates"
    if more.is_dir():
        for f in sorted(more.glob("*.jinja")):
            named[f.stem] = f.read_text(encoding="utf-8")
    if not named:
        return None
    return named["default"] if list(named) == ["default"] else named


class Tokenizer:
    """Encodes and decodes as ``AutoTokenizer`` does (special tokens added by the post-processor)."""

    def __init__(self, backend, config: dict | None = None, source: str = ""):
        self._tok = backend
        self.config: dict = config or {}
        self.source = source

    @classmethod
    def from_folder_file(cls, path: str | Path) -> "Tokenizer":
        """tokenizer.json, with tokenizer_config.json beside it when present, and the chat template
        as transformers finds it: chat_template.jinja beside them (transformers 5 writes it there)
        over tokenizer_config.json's, named templates (the list form, additional_chat_templates/)
        as a dict of name -> template."""
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        try:
            backend = HFTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises its own exception type
            raise ValueError(f"{path}: not a readable tokenizer.json ({e})") from None
        config: dict = {}
        cfg = path.parent / "tokenizer_config.json"
        if cfg.exists():
            try:
                config = json.loads(cfg.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{cfg}: not valid JSON ({e})") from None
            if not isinstance(config, dict):
                raise ValueError(f"{cfg}: not a JSON object")
        template = chat_templates(path.parent, config.get("chat_template"), cfg)
        if template is not None:
            config["chat_template"] = template
        return cls(backend, config, str(path))

    def save(self, folder: str | Path) -> None:
        """Writes tokenizer.json and tokenizer_config.json into folder."""
        folder = Path(folder)
        self._tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps(self.config, indent=2, ensure_ascii=False))

    @property
    def backend(self):
        """The ``tokenizers.Tokenizer`` it wraps."""
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, *,
                            tools: list | None = None, documents: list | None = None, **template_kwargs) -> str:
        """The chat template applied to messages, as transformers' apply_chat_template(tokenize=False)
        renders it (the named special tokens that are set reach the template too)."""
        template = self.config.get("chat_template")
        if not template:
            raise ValueError(f"{self.source or 'the tokenizer'} has no chat template")
        special = {}
        for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            v = self.config.get(name)
            v = v.get("content") if isinstance(v, dict) else v  # an AddedToken as older files store it
            if isinstance(v, str):
                special[name] = v
        return render(template, messages, add_generation_prompt, tools=tools, documents=documents,
                      **{**special, **template_kwargs})

    def chat_template_for(self, tools: bool) -> str | None:
        """The template apply_chat_template renders with (tools: whether tools are given), or None."""
        template = self.config.get("chat_template")
        return select(template, [{}] if tools else None) if template else None

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)
