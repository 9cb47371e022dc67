// How a chat template writes an assistant's tool calls, recognised from the template's own text,
// so the server can parse the model's calls back (tool_call_parser.h) and constrain them
// (runtime/grammar/tool_call_gbnf.h). One syntax per family, as its published template renders
// a call (NAME, ARGS: the function name and its arguments as a JSON object):
//   llama3-json  {"name": "NAME", "parameters": ARGS}       (Llama 3.1 / 3.2 / 3.3; "<|python_tag|>"
//                                                            may precede it; "arguments" accepted)
//   hermes       <tool_call>\n{"name": "NAME", "arguments": ARGS}\n</tool_call>   (Qwen 2.5 / 3, Hermes)
//   mistral      [TOOL_CALLS][{"name": "NAME", "arguments": ARGS}, ...]      (Nemo, Large 2407,
//                                                            Small 3.1; a space may follow the marker)
//   harmony      <|channel|>commentary to=functions.NAME <|constrain|>json<|message|>ARGS<|call|>
//                (gpt-oss; the recipient may also stand before <|channel|>, as the template writes it)
//   deepseek-r1  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
//   deepseek-v3  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>  (V3.1)
//   gemma4       <|tool_call>call:NAME{key:<|"|>text<|"|>,n:1}<tool_call|>   (Gemma 4's own notation)
// Templates that never write a call (Llama 3 8B, Phi-3/4, Gemma 2/3, Kimi K2's) have none.
#pragma once
#include <string>
#include <vector>

namespace pipellm {

enum class ToolCallSyntax { kNone, kLlama3Json, kHermes, kMistral, kHarmony, kDeepSeekR1, kDeepSeekV3, kGemma4 };

ToolCallSyntax detect_tool_call_syntax(const std::string& chat_template);
const char* tool_call_syntax_name(ToolCallSyntax s);

// The special-token texts of the syntax that the output must show for the calls to be parsed
// (control tokens a detokenizer would otherwise drop: "[TOOL_CALLS]", "<|python_tag|>", ...).
std::vector<std::string> tool_call_tokens(ToolCallSyntax s);

// OpenAI tool_calls (JSON text: [{"id", "type", "function": {"name", "arguments"}}], arguments a
// JSON string as clients send them) as the template wants them in an assistant message: most
// templates write `arguments | tojson` and need the object (else the call is rendered as a quoted
// string); DeepSeek's concatenate it as text and keep the string. InvalidArgument naming
// `where` when the text is not such an array.
std::string template_tool_calls(ToolCallSyntax s, const std::string& openai_tool_calls, const std::string& where);

}  // namespace pipellm
