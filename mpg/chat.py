"""Rendering a policy's context: its system prompt and user template around the user's prompt, as token ids.

A prompt is a string (one user message) or a `Conversation` (earlier turns, then the user's last
message). Every policy renders the whole conversation itself: its own system prompt first, the earlier
turns as turns (the model's chat template marks them), and its template applied to the last user
message only, so that an expert sees the conversation the way it was trained to see one question.
"""

from __future__ import annotations

from dataclasses import dataclass

from .policies import Policy

__all__ = ["ChatRenderer", "Conversation", "HEAD_PROBE", "Prompt", "common_prefix", "prompt_text"]

HEAD_PROBE = "\x00"  # a prompt no user writes: a context's head is what it shares with the probe's


@dataclass(frozen=True)
class Conversation:
    """Earlier turns ((role, text), role "user" or "assistant"; a client's own system turns are kept
    as "system" turns after the policy's system prompt) and the last user message, which the policy's
    template wraps."""

    history: tuple[tuple[str, str], ...]
    last: str

    def __post_init__(self):
        object.__setattr__(self, "history", tuple((str(r), str(t)) for r, t in self.history))
        for role, _ in self.history:
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"conversation turn role {role!r} is not system, user or assistant")


Prompt = str | Conversation


def prompt_text(prompt: Prompt) -> str:
    """The user's last message (what a policy's template wraps)."""
    return prompt.last if isinstance(prompt, Conversation) else prompt


def common_prefix(a, b) -> int:
    """The number of leading tokens a and b share."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class ChatRenderer:
    """Token ids of (policy, prompt) contexts, with the tokenizer's chat template when it has one."""

    def __init__(self, tokenizer, use_chat_template: bool | None = None):
        self.tokenizer = tokenizer
        self.use_chat_template = (
            getattr(tokenizer, "chat_template", None) is not None
            if use_chat_template is None
            else use_chat_template
        )

    def messages(self, policy: Policy, prompt: Prompt) -> list[dict]:
        """The chat messages a policy sees: its system prompt, the history, its template on the last turn."""
        msgs = [{"role": "system", "content": policy.system}] if policy.system is not None else []
        if isinstance(prompt, Conversation):
            msgs += [{"role": r, "content": t} for r, t in prompt.history]
        msgs.append({"role": "user", "content": policy.template.replace("{prompt}", prompt_text(prompt))})
        return msgs

    def context_ids(self, policy: Policy, prompt: Prompt) -> list[int]:
        """Token ids of the policy's context for this prompt (chat template when the tokenizer has one;
        else the system prompt, the earlier turns as "role: text" lines, and the user message)."""
        tok = self.tokenizer
        if self.use_chat_template:
            text = tok.apply_chat_template(
                self.messages(policy, prompt), add_generation_prompt=True, tokenize=False
            )
            return tok(text, add_special_tokens=False).input_ids
        user = policy.template.replace("{prompt}", prompt_text(prompt))
        turns = "".join(f"{r}: {t}\n" for r, t in prompt.history) if isinstance(prompt, Conversation) else ""
        text = (policy.system + "\n\n" if policy.system else "") + turns + user
        return tok(text).input_ids

    def render(self, policy: Policy, prompt: Prompt) -> list[int]:
        """`context_ids`, where an empty context becomes one BOS (else EOS) token, as lm-eval conditions an
        unconditioned text: every row needs a token to predict from."""
        ids = list(self.context_ids(policy, prompt))
        if ids:
            return ids
        tok = self.tokenizer
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if prefix is None:
            raise ValueError("the context is empty and the tokenizer has no BOS or EOS token to condition on")
        return [int(prefix)]
