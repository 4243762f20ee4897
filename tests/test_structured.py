"""Structured output with llguidance, over the real model (SmolLM2-135M-Instruct, its own Q4_1
blocks): JSON schemas of varied shape validate (greedy and sampled), any-JSON, regex, choices,
Lark and GBNF grammars, n > 1, streams, a constrained call batched beside a free one, the C++
bitmask against llguidance's NumPy reference, and every bad constraint refused before decoding."""
from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest

llguidance = pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

from fastlm import Engine, SamplingParams, StructuredOutput, StructuredOutputError, kernels  # noqa: E402
from fastlm.hub import DEFAULT_MODEL, resolve  # noqa: E402
from schemas import schemas  # noqa: E402

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def ask(schema) -> list[dict]:
    return [{"role": "user", "content": "Reply with a JSON object for this schema: " + json.dumps(schema)}]


@pytest.fixture(scope="module")
def engine():
    return Engine.from_pretrained(resolve(DEFAULT_MODEL), max_seq_len=2048, max_slots=16)


def test_bitmask_kernel_matches_llguidance_numpy(rng):
    from llguidance.numpy import apply_token_bitmask_inplace

    for rows, vocab in ((1, 1), (3, 31), (2, 32), (4, 33), (5, 1000), (2, 49152)):
        z = rng.standard_normal((rows, vocab)).astype(np.float32)
        bits = rng.integers(-2**31, 2**31, size=(rows, (vocab + 31) // 32), dtype=np.int64).astype(np.int32)
        bits[0, 0] = -1  # an all-allowed word
        want = z.copy()
        apply_token_bitmask_inplace(want, bits)
        got = z.copy()
        kernels.apply_token_bitmask(got, bits)
        np.testing.assert_array_equal(got, want, err_msg=f"rows {rows} vocab {vocab}")


def test_bitmask_kernel_refuses_bad_arguments():
    z = np.zeros((2, 40), np.float32)
    with pytest.raises(ValueError, match=r"bitmask must be \(2, 2\)"):
        kernels.apply_token_bitmask(z, np.zeros((2, 1), np.int32))
    with pytest.raises(TypeError, match="bitmask"):
        kernels.apply_token_bitmask(z, np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="logits"):
        kernels.apply_token_bitmask(z.astype(np.float64), np.zeros((2, 2), np.int32))
    ro = z.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.apply_token_bitmask(ro, np.zeros((2, 2), np.int32))


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_outputs_validate_against_varied_schemas(engine, temperature):
    """Nested objects, arrays with bounds, enums, bounded numbers, patterns, optional fields, anyOf
    (the benchmark runs 200 of them with each setting); calls from 16 threads decode together."""
    from concurrent.futures import ThreadPoolExecutor

    cases = schemas(24, seed=7 if temperature else 3)

    def one(i):
        return engine.chat(ask(cases[i]), structured=cases[i], max_tokens=800, temperature=temperature, seed=i)

    with ThreadPoolExecutor(16) as ex:
        outs = list(ex.map(one, range(len(cases))))
    for schema, c in zip(cases, outs):
        ch = c.choices[0]
        assert ch.finish_reason == "stop", (ch.finish_reason, ch.text)
        jsonschema.validate(json.loads(ch.text), schema)


def test_pydantic_model_and_json_object(engine):
    pydantic = pytest.importorskip("pydantic")

    class City(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=30)
        population: int = pydantic.Field(ge=0, le=10**8)

    c = engine.chat([{"role": "user", "content": "Describe Paris as JSON."}], structured=City, max_tokens=100)
    City.model_validate_json(c.text)
    c = engine.chat([{"role": "user", "content": "Give the name and capital of France as a JSON object."}],
                    structured="json_object", max_tokens=200)
    assert c.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(c.text), dict)


def test_regex_choice_and_grammars(engine):
    q = [{"role": "user", "content": "A phone number?"}]
    c = engine.chat(q, structured=StructuredOutput(regex=r"[0-9]{3}-[0-9]{4}"), max_tokens=20)
    assert c.choices[0].finish_reason == "stop"
    assert len(c.text) == 8 and c.text[3] == "-" and c.text.replace("-", "").isdigit(), c.text
    c = engine.chat([{"role": "user", "content": "Is the sky blue?"}],
                    structured=StructuredOutput(choice=["yes", "no", "maybe so"]), max_tokens=10)
    assert c.text in ("yes", "no", "maybe so")
    lark = 'start: "The answer is " NUM "."\nNUM: /[1-9][0-9]?/'
    c = engine.generate("Q: what is 6 times 7?\nA:", structured=StructuredOutput(grammar=lark), max_tokens=20)
    assert c.text.startswith("The answer is ") and c.text.endswith(".") and c.text[14:-1].isdigit(), c.text
    gbnf = 'root ::= "[" item ("," item)* "]"\nitem ::= [a-z]{1,5}'
    c = engine.generate("Some words:", structured=StructuredOutput(grammar=gbnf), max_tokens=40)
    assert c.choices[0].finish_reason == "stop"
    body = c.text[1:-1].split(",")
    assert c.text[0] == "[" and c.text[-1] == "]" and all(w.isalpha() and w.islower() and len(w) <= 5 for w in body)


def test_n_samples_stream_and_eos(engine):
    c = engine.chat(ask(PERSON), structured=PERSON, n=4, temperature=0.9, seed=5, max_tokens=60)
    assert len(c.choices) == 4
    for ch in c.choices:
        jsonschema.validate(json.loads(ch.text), PERSON)
    assert len({ch.text for ch in c.choices}) > 1  # the samples differ
    chunks = list(engine.chat_stream(ask(PERSON), structured=PERSON, max_tokens=60))
    text = "".join(ch.text for ch in chunks)
    assert chunks[-1].finish_reason == "stop"
    assert text == engine.chat(ask(PERSON), structured=PERSON, max_tokens=60).text
    jsonschema.validate(json.loads(text), PERSON)


def test_constrained_and_free_calls_in_one_batch(engine):
    """A constrained call decoding beside a free one: each gets what it gets alone (greedy)."""
    free_q = [{"role": "user", "content": "Tell me about cats."}]
    alone_free = engine.chat(free_q, max_tokens=40).text
    alone_json = engine.chat(ask(PERSON), structured=PERSON, max_tokens=60).text
    got = {}
    barrier = threading.Barrier(4)

    def run(name, *args, **kw):
        barrier.wait()
        got[name] = engine.chat(*args, **kw).text

    ts = [threading.Thread(target=run, args=("free", free_q), kwargs={"max_tokens": 40}),
          threading.Thread(target=run, args=("json", ask(PERSON)), kwargs={"structured": PERSON, "max_tokens": 60}),
          threading.Thread(target=run, args=("free2", free_q), kwargs={"max_tokens": 40}),
          threading.Thread(target=run, args=("json2", ask(PERSON)), kwargs={"structured": PERSON, "max_tokens": 60})]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert got["free"] == got["free2"] == alone_free
    assert got["json"] == got["json2"] == alone_json


def test_logprobs_are_the_models_own(engine):
    """Logprobs report the model's distribution, not the masked one (as vLLM reports them)."""
    q = [{"role": "user", "content": "Is the sky blue?"}]
    c = engine.chat(q, structured=StructuredOutput(choice=["yes", "no"]), max_tokens=5, logprobs=3)
    raw = engine.logits(engine.tokenize(engine.apply_chat_template(q)))[-1]
    lp = raw.astype(np.float64) - raw.max()
    lp -= np.log(np.exp(lp).sum())
    first = c.choices[0].logprobs[0]
    assert first.logprob == pytest.approx(lp[first.token_id], abs=1e-4)
    assert [t for t, _, _ in first.top] == list(np.argsort(-lp)[:3])


@pytest.mark.parametrize("schema, match", [
    ({"type": "objekt"}, "Invalid type: objekt"),
    ({"type": "array", "uniqueItems": True}, "Unimplemented keys.*uniqueItems"),
    ({"not": {"type": "string"}}, "Unimplemented keys.*not"),
    ({"type": "string", "format": "bogus"}, "Unknown format: bogus"),
    ({"type": "integer", "minimum": 5, "maximum": 1}, "minimum .5. is greater than maximum .1."),
    ({"$ref": "#/defs/x"}, "/defs/x"),
    ('{"type": ', "not valid JSON"),
])
def test_bad_schemas_are_refused_before_decoding(engine, schema, match):
    before = engine.scheduler.stats.requests
    with pytest.raises(StructuredOutputError, match=match):
        engine.chat(ask({}), structured=StructuredOutput(json=schema), max_tokens=10)
    assert engine.scheduler.stats.requests == before  # nothing was queued


@pytest.mark.parametrize("spec, match", [
    (StructuredOutput(regex="a{3"), "unclosed counted repetition"),
    (StructuredOutput(grammar="root ::= foo"), "Rule 'foo' not found"),
    (StructuredOutput(grammar="start: /[a-z]+/ & /[0-9]+/"), "only supported for tokens"),
    (StructuredOutput(grammar='start: x\nx: "a" x'), "matches no text"),  # never finishes
    (StructuredOutput(grammar='root ::= "a" root'), "matches no text"),
    (StructuredOutput(grammar='start: "<" a{2,3} ">"\na: "x" a | "y" a'), "matches no text"),
])
def test_bad_patterns_and_grammars_are_refused(engine, spec, match):
    with pytest.raises(StructuredOutputError, match=match):
        engine.generate("x", structured=spec, max_tokens=5)


def test_bad_forms_of_the_parameter():
    with pytest.raises(TypeError, match="structured must be"):
        SamplingParams(structured=42)
    with pytest.raises(ValueError, match="must be 'json_object'"):
        SamplingParams(structured="[0-9]+")
    with pytest.raises(ValueError, match="exactly one of"):
        StructuredOutput(regex="a", choice=["b"])
    with pytest.raises(ValueError, match="exactly one of"):
        StructuredOutput()
    with pytest.raises(TypeError, match="choice must be"):
        StructuredOutput(choice="yes")
    assert SamplingParams(structured="json_object").structured == StructuredOutput(json_object=True)


def test_without_llguidance_the_extra_is_named(engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)
    from fastlm.structured import Compiler

    fresh = Compiler(engine.tokenizer, engine.vocab_size, engine.eos_token_ids)
    with pytest.raises(ImportError, match=r'pip install "fastlm\[structured\]"'):
        fresh.matcher(StructuredOutput(json=PERSON))



def test_grammars_that_finish_are_not_refused():
    from fastlm.structured import never_finishes

    for g in ['start: "a" start | "b"', 'start: x*\nx: x "a"', 'start: [a]\na: a', 'start: a{0,3}\na: a "x"',
              'start: (x | y)\nx: "a" x\ny: /[0-9]+/', 'start: x\nx: "a" y\n  | "b"\ny: y',
              'start: call ("\\n" call)*\ncall: "<c>" obj "</c>"\nobj: %json {"type": "string", "pattern": "}"}']:
        assert never_finishes(g) is None, g
    assert never_finishes('start: call\ncall: obj\nobj: obj %json {"type": "object"}') == "start"


def test_the_cli_flags(capsys, tmp_path):
    from fastlm.cli import main

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(PERSON))
    assert main(["generate", "--json-schema", str(schema), "--max-tokens", "60", "A person as JSON:"]) == 0
    out = capsys.readouterr().out
    jsonschema.validate(json.loads(out), PERSON)
    assert main(["generate", "--choice", "yes", "--choice", "no", "Is water wet?"]) == 0
    assert capsys.readouterr().out.strip() in ("yes", "no")
    assert main(["generate", "--regex", "[", "x"]) == 2
    assert "unclosed character class" in capsys.readouterr().err


def test_each_sequence_of_a_batch_its_own_constraint(engine):
    """vLLM's form: a list of SamplingParams, one per prompt; a free one among them decodes as alone."""
    q = [{"role": "user", "content": "Tell me about cats."}]
    params = [SamplingParams(structured=PERSON, max_tokens=60), SamplingParams(max_tokens=30),
              SamplingParams(structured=StructuredOutput(choice=["yes", "no"]), max_tokens=5)]
    person, free, choice = engine.chat([ask(PERSON), q, [{"role": "user", "content": "Yes or no?"}]], params)
    jsonschema.validate(json.loads(person.text), PERSON)
    assert free.text == engine.chat(q, max_tokens=30).text
    assert choice.text in ("yes", "no")
    outs = engine.generate(["Digits:", "Letters:"], [SamplingParams(structured=StructuredOutput(regex="[0-9]{5}")),
                                                    SamplingParams(structured=StructuredOutput(regex="[a-z]{3}"))])
    assert outs[0].text.isdigit() and len(outs[0].text) == 5 and outs[1].text.isalpha() and len(outs[1].text) == 3
    with pytest.raises(ValueError, match="a list of SamplingParams needs a batch of as many prompts"):
        engine.generate(["a", "b"], [SamplingParams()])
    with pytest.raises(ValueError, match="as many prompts"):
        engine.generate("a", [SamplingParams()])
