"""Tool calls: each format's parser on scripted text (hermes, Llama 3 JSON, Mistral's two forms),
templates in each family's style rendering tools, calls and results exactly as transformers
renders them, the real model (SmolLM2-135M-Instruct) calling tools with tool_choice "required"
and a named function (arguments always valid under the function's schema), streams holding
back call text, and bad tools / tool_choice refused before decoding."""
from __future__ import annotations

import copy
import json

import pytest

from fastlm import tool_calls
from fastlm.tool_calls import CallFilter, check_choice, check_tools, format_of, parse

transformers = pytest.importorskip("transformers")
from test_chat_template import folder  # noqa: E402

from fastlm.tokenizer import Tokenizer  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string", "maxLength": 30},
                                               "unit": {"enum": ["celsius", "fahrenheit"]}},
                                               "required": ["city"], "additionalProperties": False}}},
         {"type": "function", "function": {"name": "add", "description": "Add two integers",
                                           "parameters": {"type": "object", "properties": {
                                               "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                                               "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
                                               "required": ["a", "b"], "additionalProperties": False}}}]
ASK = [{"role": "user", "content": "What's the weather in Zürich? <b>now</b>"}]
# a finished round: the assistant's call (arguments as OpenAI sends them: JSON text) and its result
ROUND = ASK + [{"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "clear"}'}]

# templates in the style of each family's (written here, not copied): how each teaches its model
# to call tools and how it writes calls and results back
HERMES = """{%- if tools %}<|im_start|>system
Tools:
{% for t in tools %}{{ t | tojson }}
{% endfor %}Call one as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>
{% endif -%}
{%- for m in messages -%}
{%- if m.role == 'assistant' and m.tool_calls -%}
<|im_start|>assistant
{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% else -%}
<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

LLAMA3 = """<|begin_of_text|>{%- if tools %}<|start_header_id|>system<|end_header_id|>

Respond with a JSON object {"name": function name, "parameters": dictionary of arguments}.
{% for t in tools %}{{ t | tojson(indent=4) }}
{% endfor %}<|eot_id|>{% endif -%}
{%- for m in messages -%}
{%- if m.role == 'assistant' and m.tool_calls -%}
<|start_header_id|>assistant<|end_header_id|>

{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}{% endfor %}<|eot_id|>
{%- elif m.role == 'tool' -%}
<|start_header_id|>ipython<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- else -%}
<|start_header_id|>{{ m.role }}<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""

MISTRAL = """<s>{%- for m in messages -%}
{%- if loop.last and tools and m.role == 'user' %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif -%}
{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]
{%- elif m.role == 'assistant' and m.tool_calls %}[TOOL_CALLS][{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}, "id": "{{ c.id }}"}{% if not loop.last %}, {% endif %}{% endfor %}]</s>
{%- elif m.role == 'tool' %}[TOOL_RESULTS]{"content": {{ m.content | tojson }}, "call_id": "{{ m.tool_call_id }}"}[/TOOL_RESULTS]
{%- else %}{{ m.content }}</s>{% endif -%}
{%- endfor %}"""

FAMILIES = {"hermes": HERMES, "llama3": LLAMA3, "mistral": MISTRAL}
SCRIPTED = {  # what a model of each family writes to call get_weather(city="Paris") and add(2, 3)
    "hermes": 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
              '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>',
    "llama3": '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
              '{"name": "add", "parameters": {"a": 2, "b": 3}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
               '{"name": "add", "arguments": {"a": 2, "b": 3}}]',
}


@pytest.mark.parametrize("fmt", list(FAMILIES))
def test_each_family_template_renders_tools_calls_and_results_as_transformers(tmp_path, fmt):
    template = FAMILIES[fmt]
    assert format_of(template) == fmt
    path = folder(tmp_path, chat_template=template)
    ours = Tokenizer.from_folder_file(path / "tokenizer.json").apply_chat_template(
        tool_calls.messages_for_template(ROUND, TOOLS, template), tools=TOOLS)
    hf_round = copy.deepcopy(ROUND)  # transformers takes a call's arguments as a dict
    hf_round[1]["tool_calls"][0]["function"]["arguments"] = {"city": "Zürich"}
    hf = transformers.AutoTokenizer.from_pretrained(str(path))
    theirs = hf.apply_chat_template(hf_round, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    assert '"city": "Zürich"' in ours and "<b>now</b>" in ours  # no escaping on the way


@pytest.mark.parametrize("fmt", list(FAMILIES))
def test_each_format_parses_scripted_calls(fmt):
    content, calls = parse(fmt, SCRIPTED[fmt], TOOLS)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"}),
                                                                   ("add", {"a": 2, "b": 3})]
    assert content == ("Let me check." if fmt == "hermes" else "")
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_the_newer_mistral_form_and_what_is_not_a_call():
    _, calls = parse("mistral", '[TOOL_CALLS]add[ARGS]{"a": 1, "b": 2}[TOOL_CALLS]get_weather[ARGS]{"city": "x"}', TOOLS)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("add", {"a": 1, "b": 2}), ("get_weather", {"city": "x"})]
    for fmt, text in [("hermes", '<tool_call>\n{"name": "add", "arguments": {"a": 1,}}\n</tool_call>'),  # bad JSON
                      ("hermes", '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'),  # not a tool
                      ("llama3", 'The answer is {"a": 1}'),  # prose first
                      ("mistral", "[TOOL_CALLS] not json")]:
        content, calls = parse(fmt, text, TOOLS)
        assert calls == [] and content == text, (fmt, text)
    # an unclosed last call (cut by max_tokens): the closed calls before it stand
    text = SCRIPTED["hermes"] + '\n<tool_call>\n{"name": "add", "argu'
    content, calls = parse("hermes", text, TOOLS)
    assert [c.name for c in calls] == ["get_weather", "add"]


@pytest.mark.parametrize("fmt", list(FAMILIES))
def test_a_stream_holds_back_call_text(fmt):
    text = SCRIPTED[fmt]
    f = CallFilter(fmt, TOOLS)
    released = "".join(f.feed(ch) for ch in text)
    released += f.finish()
    assert released.strip() == ("Let me check." if fmt == "hermes" else "")
    assert [c.name for c in f.calls] == ["get_weather", "add"]
    f = CallFilter(fmt, TOOLS)  # prose with no call goes out as it comes (a tail that may open a call waits)
    prose = "It is sunny in Paris today, 21 degrees; no tool needed."
    out = [f.feed(ch) for ch in prose]
    assert "".join(out) + f.finish() == prose and f.calls == []
    if fmt != "llama3":
        assert "".join(out) == prose


def test_bad_tools_and_tool_choice():
    with pytest.raises(ValueError, match="non-empty list"):
        check_tools([])
    with pytest.raises(ValueError, match=r"tools\[0\].type must be 'function'"):
        check_tools([{"type": "code_interpreter"}])
    with pytest.raises(ValueError, match="non-empty 'name'"):
        check_tools([{"type": "function", "function": {"description": "x"}}])
    with pytest.raises(ValueError, match="appears twice"):
        check_tools(TOOLS + TOOLS[:1])
    with pytest.raises(ValueError, match="must be a JSON schema"):
        check_tools([{"type": "function", "function": {"name": "f", "parameters": "x"}}])
    tools = check_tools(TOOLS)
    with pytest.raises(ValueError, match="'nope', which is not among the tools .get_weather, add."):
        check_choice({"type": "function", "function": {"name": "nope"}}, tools)
    with pytest.raises(ValueError, match="needs tools"):
        check_choice("required", None)
    with pytest.raises(ValueError, match="must be one of"):
        check_choice("always", tools)
    assert check_choice(None, tools) == ("auto", None)
    assert check_choice({"type": "function", "function": {"name": "add"}}, tools) == ("required", "add")


# ---- the real model ----
@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("llguidance")
    from fastlm import Engine
    from fastlm.hub import DEFAULT_MODEL, resolve

    return Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=2048, max_slots=16)


def _valid(call) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}[call.name]
    jsonschema.validate(json.loads(call.arguments), schema)


def test_required_calls_always_parse(engine):
    """50 sampled tries at temperature 0.8, 16 at a time: every call names a tool and its arguments
    validate under that tool's schema."""
    from concurrent.futures import ThreadPoolExecutor

    questions = ["What's the weather in Paris?", "Add 17 and 25.", "Is it raining in Oslo?", "What is 3 plus 4?",
                 "Weather in Tokyo in fahrenheit, please."]

    def one(i):
        return engine.chat([{"role": "user", "content": questions[i % len(questions)]}], tools=TOOLS,
                           tool_choice="required", parallel_tool_calls=False, temperature=0.8, seed=i, max_tokens=120)

    with ThreadPoolExecutor(16) as ex:
        outs = list(ex.map(one, range(50)))
    for c in outs:
        ch = c.choices[0]
        assert ch.finish_reason == "tool_calls" and len(ch.tool_calls) == 1, (ch.finish_reason, ch.text)
        _valid(ch.tool_calls[0])
        assert c.to_openai()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == ch.tool_calls[0].name


def test_named_function_parallel_calls_and_a_stream(engine):
    c = engine.chat(ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=200)
    ch = c.choices[0]
    assert ch.finish_reason in ("tool_calls", "length") and ch.tool_calls
    assert all(t.name == "add" for t in ch.tool_calls)
    for t in ch.tool_calls:
        _valid(t)
    chunks = list(engine.chat_stream(ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                     max_tokens=120))
    assert chunks[-1].finish_reason == "tool_calls" and len(chunks[-1].tool_calls) == 1
    assert all(ch.tool_calls is None for ch in chunks[:-1])
    assert "".join(ch.text for ch in chunks) == ""  # the call is no content
    _valid(chunks[-1].tool_calls[0])
    alone = engine.chat(ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=120)
    assert [t.arguments for t in alone.choices[0].tool_calls] == [t.arguments for t in chunks[-1].tool_calls]


def test_auto_none_and_a_round_with_results(engine):
    c = engine.chat([{"role": "user", "content": "Say hello."}], tools=TOOLS, max_tokens=30)
    assert c.choices[0].tool_calls is None and c.text  # free text, no call made
    c = engine.chat(ROUND, tools=TOOLS, max_tokens=30)  # the result goes back through the template
    assert c.usage.prompt_tokens > len(engine.tokenize(engine.apply_chat_template(ASK)))
    none = engine.chat(ASK, tools=TOOLS, tool_choice="none", max_tokens=30)
    plain = engine.chat(ASK, max_tokens=30)
    assert none.text == plain.text  # SmolLM2's template has no tools: "none" leaves the prompt as it was


def test_tool_errors_before_decoding(engine):
    before = engine.scheduler.stats.requests
    with pytest.raises(ValueError, match="not among the tools"):
        engine.chat(ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ValueError, match="cannot be combined with structured"):
        engine.chat(ASK, tools=TOOLS, tool_choice="required", structured="json_object")
    with pytest.raises(ValueError, match="arguments are not valid JSON"):
        bad = copy.deepcopy(ROUND)
        bad[1]["tool_calls"][0]["function"]["arguments"] = "{city"
        engine.chat(bad, tools=TOOLS)
    assert engine.scheduler.stats.requests == before
