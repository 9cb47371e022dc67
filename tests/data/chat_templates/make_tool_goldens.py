#!/usr/bin/env python3
"""Reference renderings of tool-calling conversations (tool_goldens.json) for the templates that
write tool calls, made as make_goldens.py makes goldens.json (Jinja2 configured as Hugging Face
transformers configures it). Each case holds the conversation as an OpenAI client sends it
(`openai`: arguments as a JSON string) and the rendering of the same conversation in the form the
family's template takes (arguments as an object, but for DeepSeek's templates, which concatenate
the string). The server converts the first into the second (engine/tokenizer/tool_call_syntax.h);
tests/unit/tool_calls_test.cpp checks that its rendering equals `expected`. Run with Jinja2 3.1:
python3 make_tool_goldens.py"""
import copy
import json
import os

from make_goldens import DATE, HERE, TOKENS, TOOLS, Raised, environment

TEMPLATES = ["deepseek-r1.jinja", "deepseek-v3.1.jinja", "gemma4.jinja", "gpt-oss-120b.jinja", "llama3.1-instruct.jinja",
             "llama3.2-instruct.jinja", "mistral-large-instruct-2407.jinja", "mistral-nemo-instruct-2407.jinja",
             "mistral-small-3.1-24b-instruct-2503.jinja", "qwen2.5-instruct.jinja", "qwen3.jinja"]
STRING_ARGUMENTS = {"deepseek-r1.jinja", "deepseek-v3.1.jinja"}


def call(call_id, args):
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}}


# (name, messages, add_generation_prompt)
CONVERSATIONS = [
    ("tool_flow", [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": "", "tool_calls": [call("call12345", {"city": "Paris"})]},
                   {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temp\": 21}"},
                   {"role": "assistant", "content": "It is 21 degrees."}], False),
    ("two_calls", [{"role": "user", "content": "Weather in Paris and in London for 2 days?"},
                   {"role": "assistant", "content": "", "tool_calls": [call("call12345", {"city": "Paris", "days": 2}),
                                                                     call("call67890", {"city": "London", "days": 2})]},
                   {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "sunny"},
                   {"role": "tool", "tool_call_id": "call67890", "name": "get_weather", "content": "rain"}], True),
]


def family_form(messages, template):
    out = copy.deepcopy(messages)
    if template in STRING_ARGUMENTS:
        return out
    for m in out:
        for c in m.get("tool_calls", []):
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    return out


def main():
    env = environment()
    cases = []
    for name in TEMPLATES:
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            template = env.from_string(f.read())
        bos, eos = TOKENS[name]
        for conv, messages, gen in CONVERSATIONS:
            case = {"template": name, "conversation": conv, "add_generation_prompt": gen, "bos_token": bos, "eos_token": eos,
                    "openai": messages}
            try:
                case["expected"] = template.render(messages=family_form(messages, name), tools=TOOLS, documents=None,
                                                   add_generation_prompt=gen, bos_token=bos, eos_token=eos)
            except Raised as e:
                case["raises"] = str(e)
            cases.append(case)
    out = {"date": DATE, "tools": TOOLS, "cases": cases}
    with open(os.path.join(HERE, "tool_goldens.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(len(cases), "cases")


if __name__ == "__main__":
    main()
