"""Chat templates rendered exactly as transformers' apply_chat_template(tokenize=False) renders
them: the environment (loopcontrols, {% generation %}, tojson without HTML escaping, strftime_now,
namespace, raise_exception), where the template comes from (tokenizer_config.json, its list of
named templates, chat_template.jinja), and tools, documents and extra variables passed through."""
from __future__ import annotations

import json
from datetime import datetime

import pytest
from fastlm.chat import render
from fastlm.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

# the features transformers' environment has and a bare jinja2 sandbox has not
FEATURES = """{{- bos_token -}}
{%- set ns = namespace(turns=0, last_user='') -%}
{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>
{% endif -%}
{%- if documents %}{% for d in documents %}[doc {{ loop.index }}: {{ d.title }}] {{ d.text }}
{% endfor %}{% endif -%}
{%- for m in messages -%}
  {%- if m.role == 'system' and not loop.first %}{{ raise_exception('the system message must come first') }}{% endif -%}
  {%- if m.content == 'STOP' %}{% break %}{% endif -%}
  {%- if m.content == 'SKIP' %}{% continue %}{% endif -%}
  {%- set ns.turns = ns.turns + 1 -%}
  {%- if m.role == 'user' %}{% set ns.last_user = m.content %}{% endif -%}
  <{{ m.role }}>
  {%- if m.role == 'assistant' %}{% generation %}{{ m.content }}{% if m.reasoning_content %} (thought: {{ m.reasoning_content }}){% endif %}{% endgeneration %}
  {%- else %}{{ m.content }}{% endif %}
  {%- if m.meta is defined %} {{ m.meta | tojson }}{% endif %}
</{{ m.role }}>
{% endfor -%}
turns={{ ns.turns }} last={{ ns.last_user | tojson }} date={{ strftime_now('%Y-%m-%d') }}
{%- if enable_thinking is defined and not enable_thinking %} /no_think{% endif %}
{%- if add_generation_prompt %}
<assistant>{% endif %}"""

CONVERSATION = [
    {"role": "system", "content": "Be terse. <b>HTML</b> & 'quotes' stay as they are."},
    {"role": "user", "content": "Qu'est-ce qu'un café? 日本語 😀", "meta": {"lang": "fr", "tags": ["<x>", "é"]}},
    {"role": "assistant", "content": "Un café <i>noir</i>.", "reasoning_content": "simple question"},
    {"role": "user", "content": "SKIP"},
    {"role": "user", "content": "And tea?"},
    {"role": "user", "content": "STOP"},
    {"role": "user", "content": "never rendered"},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather <now> in a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string", "description": "e.g. Zürich"}},
                                               "required": ["city"]}}}]
DOCUMENTS = [{"title": "Tea", "text": "Tea is a drink."}, {"title": "Café", "text": "Coffee, too."}]


def folder(tmp_path, chat_template=None, jinja=None, extra: dict | None = None):
    """A tokenizer folder both libraries read: tokenizer.json, tokenizer_config.json, maybe
    chat_template.jinja and additional_chat_templates/."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", **(extra or {})}
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    if jinja is not None:
        (tmp_path / "chat_template.jinja").write_text(jinja)
    return tmp_path


def both(path, messages, **kw):
    ours = Tokenizer.from_folder_file(path / "tokenizer.json").apply_chat_template(messages, **kw)
    hf = transformers.AutoTokenizer.from_pretrained(str(path))
    kw.setdefault("add_generation_prompt", True)
    theirs = hf.apply_chat_template(messages, tokenize=False, **kw)
    return ours, theirs


def test_the_environment_renders_as_transformers(tmp_path):
    p = folder(tmp_path, FEATURES)
    ours, theirs = both(p, CONVERSATION)
    assert ours == theirs
    assert "never rendered" not in ours and "SKIP" not in ours  # break and continue ran
    assert '"Zürich"' not in ours and '"lang": "fr"' in ours and '"<x>"' in ours and '"é"' in ours  # tojson unescaped
    assert "(thought: simple question)" in ours and "turns=4" in ours
    assert f"date={datetime.now():%Y-%m-%d}" in ours
    for kw in ({"tools": TOOLS}, {"documents": DOCUMENTS}, {"tools": TOOLS, "documents": DOCUMENTS},
               {"add_generation_prompt": False}, {"enable_thinking": False}, {"enable_thinking": True}):
        ours, theirs = both(p, CONVERSATION[:3], **kw)
        assert ours == theirs, kw
    assert '"description": "e.g. Zürich"' in both(p, CONVERSATION[:2], tools=TOOLS)[0]


def test_reasoning_under_other_names_reaches_the_template(tmp_path):
    p = folder(tmp_path, FEATURES)
    for name in ("thinking", "reasoning"):
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", name: "a greeting"}]
        ours, theirs = both(p, msgs)
        assert ours == theirs and "(thought: a greeting)" in ours


def test_chat_template_jinja_and_named_templates(tmp_path):
    p = folder(tmp_path / "a", "config: {{ messages[0].content }}", jinja="jinja file: {{ messages[0].content }}")
    msgs = [{"role": "user", "content": "hi"}]
    ours, theirs = both(p, msgs)
    assert ours == theirs == "jinja file: hi"  # chat_template.jinja wins, as in transformers 5
    named = [{"name": "default", "template": "default: {{ messages[0].content }}"},
             {"name": "tool_use", "template": "tools: {{ tools | length }} {{ messages[0].content }}"}]
    q = folder(tmp_path / "b", named)
    assert both(q, msgs) == ("default: hi", "default: hi")
    ours, theirs = both(q, msgs, tools=TOOLS)
    assert ours == theirs == "tools: 1 hi"
    r = folder(tmp_path / "c", None, jinja="only the file: {{ messages | length }}")
    assert both(r, msgs) == ("only the file: 1", "only the file: 1")


def test_the_sandbox_holds(tmp_path):
    escape = "{{ messages.__class__.__mro__ }}"
    with pytest.raises(ValueError, match="chat template"):
        render(escape, [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="underscore"):
        render("{% set ns = namespace(_x=1) %}", [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="the system message must come first"):
        render(FEATURES, [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}])
    with pytest.raises(ValueError, match="does not parse"):
        render("{% for m in messages %}", [{"role": "user", "content": "x"}])


def test_what_a_template_may_take_is_checked():
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(TypeError, match="tools must be a list of JSON schemas"):
        render(FEATURES, msgs, tools=[print])
    with pytest.raises(TypeError, match="documents"):
        render(FEATURES, msgs, documents="text")
    with pytest.raises(TypeError, match="messages holds a object"):
        render(FEATURES, [{"role": "user", "content": object()}])
    with pytest.raises(TypeError, match="messages must be a list"):
        render(FEATURES, ["hello"])
    with pytest.raises(ValueError, match="none 'default'"):
        render({"tool_use": "x"}, msgs)


def test_engine_chat_passes_tools_and_kwargs():
    from fastlm import Engine
    from fastlm.hub import DEFAULT_MODEL, resolve

    eng = Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=512)
    eng.tokenizer.config["chat_template"] = FEATURES  # this engine's own copy
    text = eng.apply_chat_template(CONVERSATION[:2], tools=TOOLS, enable_thinking=False)
    assert "<tools>" in text and text.endswith(" /no_think<assistant>")
    a = eng.chat(CONVERSATION[:2], max_tokens=3, tools=TOOLS, chat_template_kwargs={"enable_thinking": False})
    assert a.usage.prompt_tokens == len(eng.tokenizer.encode(text, add_special_tokens=False))
    b = eng.chat(CONVERSATION[:2], max_tokens=3)
    assert b.usage.prompt_tokens < a.usage.prompt_tokens
    s = eng.chat_stream(CONVERSATION[:2], max_tokens=3, tools=TOOLS, chat_template_kwargs={"enable_thinking": False})
    assert [c.token_id for c in s] == a.token_ids
    with pytest.raises(TypeError, match="chat_template_kwargs must be a dict"):
        eng.chat(CONVERSATION[:2], chat_template_kwargs=["x"])
