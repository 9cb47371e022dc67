#!/usr/bin/env python3
"""Reference renderings of the templates in this folder (goldens.json), made the way Hugging Face
transformers renders chat templates: Jinja2's ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension and a pass-through {% generation %} tag, HF's tojson
(json.dumps, ensure_ascii=False), raise_exception and strftime_now (clock fixed at DATE), and
tools=None / documents=None unless given. Run with Jinja2 3.1: python3 make_goldens.py"""
import datetime
import json
import os

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DATE = "2025-08-05"


class Generation(Extension):  # HF's AssistantTracker, without the mask bookkeeping
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class Raised(Exception):
    pass


def environment():
    def raise_exception(message):
        raise Raised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.strptime(DATE, "%Y-%m-%d").strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"}}, "required": ["city"]}}}]

CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is 2+2?"}],
    "system_user": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}],
    "multi_turn": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke."}],
    "system_history": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"},
                       {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}],
    "assistant_last": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
    "whitespace_unicode": [{"role": "system", "content": "  Be brief.\n"},
                           {"role": "user", "content": "\n  H\u00e9llo, \u4e16\u754c! \U0001f389  \n"},
                           {"role": "assistant", "content": "   I am an assistant   "},
                           {"role": "user", "content": "Quote: \"x\" and 'y' \\ tab\tend"}],
    "think": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "<think>\nLet me think.\n</think>\n\nBecause."},
              {"role": "user", "content": "And then?"}],
    "reasoning_field": [{"role": "user", "content": "Why?"},
                        {"role": "assistant", "content": "Because.", "reasoning_content": "Thinking hard."}],
    "tool_flow": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function",
                   "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                  {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temp\": 21}"},
                  {"role": "assistant", "content": "It is 21 degrees."}],
}

# The special tokens each model's tokenizer gives bos_token / eos_token.
TOKENS = {
    "deepseek-r1.jinja": ("<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"),
    "deepseek-v3.1.jinja": ("<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"),
    "gemma4.jinja": ("<bos>", "<eos>"),
    "kimi-k2.jinja": ("[BOS]", "[EOS]"),
    "gemma-it.jinja": ("<bos>", "<eos>"),
    "gemma3-it.jinja": ("<bos>", "<eos>"),
    "gpt-oss-120b.jinja": ("<|startoftext|>", "<|return|>"),
    "llama3-8b-instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1-instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2-instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-large-instruct-2407.jinja": ("<s>", "</s>"),
    "mistral-nemo-instruct-2407.jinja": ("<s>", "</s>"),
    "mistral-small-3.1-24b-instruct-2503.jinja": ("<s>", "</s>"),
    "phi-3.5-mini-instruct.jinja": ("<s>", "<|endoftext|>"),
    "phi-4.jinja": ("", "<|im_end|>"),
    "qwen2.5-instruct.jinja": ("", "<|im_end|>"),
    "qwen3.jinja": ("", "<|im_end|>"),
}


# Template variables beyond the standard ones, rendered on a few conversations each.
VARIABLES = {
    "qwen3.jinja": [{"enable_thinking": False}],
    "deepseek-v3.1.jinja": [{"thinking": True}],
    "gemma4.jinja": [{"enable_thinking": True}],
    "gpt-oss-120b.jinja": [{"reasoning_effort": "high", "model_identity": "You are a test."}],
}


def render(template, case, messages, variables):
    try:
        case["expected"] = template.render(messages=messages, tools=TOOLS if case["tools"] else None, documents=None,
                                           add_generation_prompt=case["add_generation_prompt"],
                                           bos_token=case["bos_token"], eos_token=case["eos_token"], **variables)
    except Raised as e:
        case["raises"] = str(e)
    except Exception as e:  # a template that cannot take this conversation
        case["fails"] = type(e).__name__


def main():
    env = environment()
    cases = []
    for name in sorted(TOKENS):
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            template = env.from_string(f.read())
        bos, eos = TOKENS[name]
        for conv, messages in CONVERSATIONS.items():
            for with_tools in ([False, True] if conv == "tool_flow" else [False]):
                for gen in (True, False):
                    case = {"template": name, "conversation": conv, "tools": with_tools, "add_generation_prompt": gen,
                            "bos_token": bos, "eos_token": eos}
                    render(template, case, messages, {})
                    cases.append(case)
        for variables in VARIABLES.get(name, []):
            for conv in ("system_user", "system_history"):
                case = {"template": name, "conversation": conv, "tools": False, "add_generation_prompt": True,
                        "bos_token": bos, "eos_token": eos, "variables": variables}
                render(template, case, CONVERSATIONS[conv], variables)
                cases.append(case)
    out = {"date": DATE, "tools": TOOLS, "conversations": CONVERSATIONS, "cases": cases}
    with open(os.path.join(HERE, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
