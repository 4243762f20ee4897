"""Tokenization with Hugging Face ``tokenizers`` (tokenizer.json); no hand-written BPE."""
from __future__ import annotations

import json
from pathlib import Path


class Tokenizer:
    """Encodes and decodes as ``AutoTokenizer`` does (special tokens added by the post-processor)."""

    def __init__(self, backend, config: dict | None = None, source: str = ""):
        self._tok = backend
        self.config: dict = config or {}
        self.source = source

    @classmethod
    def from_folder_file(cls, path: str | Path) -> "Tokenizer":
        """tokenizer.json, with tokenizer_config.json beside it when present."""
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
        return cls(backend, config, str(path))

    def save(self, folder: str | Path) -> None:
        """Writes tokenizer.json and tokenizer_config.json into folder."""
        folder = Path(folder)
        self._tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps(self.config, indent=2, ensure_ascii=False))

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
