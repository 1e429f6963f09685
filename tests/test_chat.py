"""Contexts of multi-turn conversations: every policy renders the whole conversation with its own system
prompt first, earlier turns kept as turns of the model's chat template, its template on the last
message only; a conversation of one turn is the plain prompt's context."""

import pytest
from tiny import tiny_tokenizer

from mpg.chat import ChatRenderer, Conversation
from mpg.policies import Policy

# a chat template in the spirit of ChatML, over the tiny vocabulary's words
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant{% endif %}"
)


@pytest.fixture
def tok():
    t = tiny_tokenizer()
    t.chat_template = TEMPLATE
    return t


def test_history_turns_are_the_templates_own_turns(tok):
    chat = ChatRenderer(tok)
    policy = Policy(system="a b", template="b {prompt} a")
    conv = Conversation((("system", "b"), ("user", "a a"), ("assistant", "b b")), "a")
    messages = [
        {"role": "system", "content": "a b"},
        {"role": "system", "content": "b"},
        {"role": "user", "content": "a a"},
        {"role": "assistant", "content": "b b"},
        {"role": "user", "content": "b a a"},
    ]
    want = tok(
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
    )
    assert chat.context_ids(policy, conv) == want.input_ids
    assert chat.context_ids(policy, Conversation((), "a")) == chat.context_ids(policy, "a")


def test_without_a_chat_template_turns_are_lines(tok):
    tok.chat_template = None
    chat = ChatRenderer(tok)
    conv = Conversation((("user", "a"), ("assistant", "b")), "a b")
    assert chat.context_ids(Policy(system="b"), conv) == tok("b\n\nuser: a\nassistant: b\na b").input_ids
    with pytest.raises(ValueError, match="role"):
        Conversation((("tool", "a"),), "b")


def test_generate_takes_a_conversation(engine):
    conv = Conversation((("user", "a"), ("assistant", "b b")), "a b")
    policy = Policy(adapter="x", system="b")
    out = engine.generate(conv, policy=policy, max_new_tokens=4, seed=2, eos_token_id=[])
    assert len(out.token_ids[0]) == 4
    assert engine.context_ids(policy, conv) != engine.context_ids(policy, "a b")
