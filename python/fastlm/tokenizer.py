"""Tokenization with Hugging Face ``tokenizers`` (tokenizer.json); no hand-written BPE."""
from __future__ import annotations

import json
from pathlib import Path


class Tokenizer:
    """Encodes and decodes as ``AutoTokenizer`` does (special tokens added by the post-processor)."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as HFTokenizer

        self.path = Path(path)
        try:
            self._tok = HFTokenizer.from_file(str(self.path))
        except Exception as e:  # the tokenizers library raises its own exception type
            raise ValueError(f"{self.path}: not a readable tokenizer.json ({e})") from None
        self.config: dict = {}
        cfg = self.path.parent / "tokenizer_config.json"
        if cfg.exists():
            try:
                self.config = json.loads(cfg.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{cfg}: not valid JSON ({e})") from None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)
