// Chat templates: each hand-written family renderer against expected prompts (use_jinja = false:
// the minimal templates below only carry the families' markers), the real templates stored in
// the vocabulary files (rendered by the Jinja engine), detection, and the errors. The Jinja
// engine itself is tested in jinja_test.cpp.
#include <gtest/gtest.h>

#include "base/error.h"
#include "engine/gguf/gguf_file.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/unit/test_data.h"

namespace pipellm {
namespace {

const std::vector<ChatMessage> kChat = {
    {"system", "You are terse."}, {"user", "Hi there"}, {"assistant", "Hello."}, {"user", "2+2?"}};

// Minimal templates holding each family's markers (the family renderers never execute them).
const char* kLlama3Tmpl = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}";
const char* kChatmlTmpl = "{{ '<|im_start|>' + message['role'] + '\\n' }}";
const char* kLlama2Tmpl = "{{ bos_token + '[INST] ' }}{{ '<<SYS>>\\n' }}";
const char* kMistralTmpl = "{{ '[INST] ' + message['content'] + ' [/INST]' }}";
const char* kGemmaTmpl = "{{ '<start_of_turn>' + role + '\\n' }}";
const char* kPhi3Tmpl = "{{ '<|user|>\\n' }}{{ '<|assistant|>\\n' }}{{ '<|end|>\\n' }}";
const char* kGptOssTmpl = "{{- \"<|start|>system<|message|>\" }}{{- \"<|start|>assistant<|channel|>final<|message|>\" }}";

// The hand-written renderers only.
ChatTemplateOptions families(ChatTemplateOptions o = {}) {
  o.use_jinja = false;
  return o;
}

TEST(ChatTemplate, Llama3) {
  EXPECT_EQ(apply_chat_template(kLlama3Tmpl, kChat, true, "<|begin_of_text|>", "<|eot_id|>", families()),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(apply_chat_template(kLlama3Tmpl, {{"user", "  x \n"}}, false, "", "", families()),
            "<|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>");
}

TEST(ChatTemplate, Chatml) {
  EXPECT_EQ(apply_chat_template(kChatmlTmpl, kChat, true, "", "<|im_end|>", families()),
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
  const std::string qwen25 =
      std::string(kChatmlTmpl) + "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
  EXPECT_EQ(apply_chat_template(qwen25, {{"user", "Hi"}}, false, "", "", families()),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplate, Llama2) {
  EXPECT_EQ(apply_chat_template(kLlama2Tmpl, kChat, true, "<s>", "</s>", families()),
            "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST] Hello. </s><s>[INST] 2+2? [/INST]");
}

TEST(ChatTemplate, Mistral) {
  EXPECT_EQ(apply_chat_template(kMistralTmpl, kChat, true, "<s>", "</s>", families()),
            "<s>[INST] You are terse.\n\nHi there [/INST]Hello.</s>[INST] 2+2? [/INST]");
}

TEST(ChatTemplate, Gemma) {
  EXPECT_EQ(apply_chat_template(kGemmaTmpl, kChat, true, "<bos>", "<eos>", families()),
            "<bos><start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n");
}

// Gemma 3's own template (tokenizer.chat_template of vocab-gemma3.gguf), run by the Jinja engine:
// the system text goes in front of the first user turn as it is, each message's content is
// trimmed; the gemma family renderer writes the same.
TEST(ChatTemplate, Gemma3TemplateFromTheVocabulary) {
  auto f = GgufFile::open(test::testdata("vocab/vocab-gemma3.gguf"));
  auto tok = Tokenizer::from_gguf(*f);
  ASSERT_TRUE(tok->chat_template().has_value());
  const std::string tmpl = *tok->chat_template();  // a copy: chat_template() returns by value
  EXPECT_EQ(detect_chat_template(tmpl), ChatTemplateFamily::kGemma);
  EXPECT_EQ(apply_chat_template(tmpl, {{"system", " Be brief. "}, {"user", "  Hi \n"}, {"assistant", "\nHello. "}}, true,
                                "<bos>", "<eos>"),
            "<bos><start_of_turn>user\n Be brief. \n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>model\n");
  EXPECT_EQ(apply_chat_template(tmpl, {{"user", "q"}}, false, "", ""), "<start_of_turn>user\nq<end_of_turn>\n");
  EXPECT_EQ(apply_chat_template(tmpl, {{"system", " Be brief. "}, {"user", "  Hi \n"}, {"assistant", "\nHello. "}}, true,
                                "<bos>", "<eos>", families()),
            "<bos><start_of_turn>user\n Be brief. \n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
            "<start_of_turn>model\n");
  // The template refuses turns that do not alternate (raise_exception), with its own message.
  try {
    apply_chat_template(tmpl, {{"user", "a"}, {"user", "b"}}, true, "", "");
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("Conversation roles must alternate"), std::string::npos) << e.what();
  }
}

// The Llama 3 and Qwen 3 templates of the vocabulary files through the Jinja engine.
TEST(ChatTemplate, Llama3AndQwen3TemplatesFromTheVocabularies) {
  for (const char* file : {"vocab/vocab-llama3.gguf", "vocab/vocab-qwen3.gguf"}) {
    auto f = GgufFile::open(test::testdata(file));
    auto tok = Tokenizer::from_gguf(*f);
    ASSERT_TRUE(tok->chat_template().has_value()) << file;
    const std::string tmpl = *tok->chat_template();  // a copy: chat_template() returns by value
    const std::string llama3 =
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n";
    const std::string chatml =
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n";
    const bool is_llama3 = std::string(file).find("llama3") != std::string::npos;
    EXPECT_EQ(apply_chat_template(tmpl, kChat, true, "<|begin_of_text|>", "", {}), is_llama3 ? llama3 : chatml) << file;
  }
  // Qwen 3 keeps the reasoning of the answer after the last user turn only.
  auto f = GgufFile::open(test::testdata("vocab/vocab-qwen3.gguf"));
  auto tok = Tokenizer::from_gguf(*f);
  std::vector<ChatMessage> think = {{"user", "Why?"}, {"assistant", "Because."}};
  think[1].reasoning_content = "Let me think.";
  EXPECT_EQ(apply_chat_template(*tok->chat_template(), think, false, "", ""),
            "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n<think>\nLet me think.\n</think>\n\nBecause.<|im_end|>\n");
}

// gpt-oss: OpenAI's published harmony template without tools: its own system message, the
// caller's system text as developer instructions, answers on the final channel.
TEST(ChatTemplate, GptOss) {
  ChatTemplateOptions o;
  o.date = "2025-08-05";
  auto system = [](const char* effort) {
    return std::string(
               "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
               "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: ") +
           effort + "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>";
  };
  EXPECT_EQ(detect_chat_template(kGptOssTmpl), ChatTemplateFamily::kGptOss);
  EXPECT_STREQ(chat_template_family_name(ChatTemplateFamily::kGptOss), "gpt-oss");
  o.use_jinja = false;
  EXPECT_EQ(apply_chat_template(kGptOssTmpl, kChat, true, "", "<|return|>", o),
            system("medium") +
                "<|start|>developer<|message|># Instructions\n\nYou are terse.\n\n<|end|>"
                "<|start|>user<|message|>Hi there<|end|>"
                "<|start|>assistant<|channel|>final<|message|>Hello.<|end|>"
                "<|start|>user<|message|>2+2?<|end|>"
                "<|start|>assistant");
  // A closing answer without a generation prompt ends in <|return|>; no system text, no developer message.
  o.reasoning_effort = "high";
  EXPECT_EQ(apply_chat_template(kGptOssTmpl, {{"user", "q"}, {"assistant", "a"}}, false, "", "", o),
            system("high") + "<|start|>user<|message|>q<|end|><|start|>assistant<|channel|>final<|message|>a<|return|>");
  // Without a date: today's, as YYYY-MM-DD.
  const std::string today = apply_chat_template(kGptOssTmpl, {{"user", "q"}}, true, "", "", families());
  const size_t at = today.find("Current date: ");
  ASSERT_NE(at, std::string::npos);
  const std::string date = today.substr(at + 14, 11);
  EXPECT_TRUE(date.size() == 11 && date[4] == '-' && date[7] == '-' && date[10] == '\n') << today;

  o.reasoning_effort = "extreme";
  EXPECT_THROW(apply_chat_template(kGptOssTmpl, kChat, true, "", "", o), InvalidArgument);
  o.reasoning_effort = "low";
  o.date = "5 Aug 2025";
  EXPECT_THROW(apply_chat_template(kGptOssTmpl, kChat, true, "", "", o), InvalidArgument);
}

// The rendered prompts tokenize with the turn markers as single tokens.
TEST(ChatTemplate, PromptsTokenizeIntoTheMarkers) {
  auto f = GgufFile::open(test::testdata("vocab/vocab-gptoss.gguf"));
  auto tok = Tokenizer::from_gguf(*f);
  ChatTemplateOptions o = families();
  o.date = "2025-08-05";
  const std::string prompt = apply_chat_template(kGptOssTmpl, {{"user", "Hi"}}, true, "", "", o);
  const auto ids = tok->encode(prompt, false, true);
  std::string markers;
  for (int32_t id : ids) {
    const std::string piece = tok->token_to_piece(id);
    if (piece.size() > 4 && piece.compare(0, 2, "<|") == 0) markers += piece;
  }
  EXPECT_EQ(markers, "<|start|><|message|><|end|><|start|><|message|><|end|><|start|>");
  EXPECT_EQ(tok->decode(ids), prompt);
}

TEST(ChatTemplate, Phi3) {
  EXPECT_EQ(apply_chat_template(kPhi3Tmpl, kChat, false, "", "", families()),
            "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi there<|end|>\n<|assistant|>\nHello.<|end|>\n"
            "<|user|>\n2+2?<|end|>\n");
  EXPECT_EQ(apply_chat_template(kPhi3Tmpl, {{"user", "q"}}, true, "", "", families()), "<|user|>\nq<|end|>\n<|assistant|>\n");
}

TEST(ChatTemplate, DetectsTheVocabularyFilesTemplates) {
  const std::pair<const char*, ChatTemplateFamily> files[] = {
      {"vocab/vocab-llama3.gguf", ChatTemplateFamily::kLlama3},
      {"vocab/vocab-qwen3.gguf", ChatTemplateFamily::kChatml},
      {"vocab/vocab-gemma3.gguf", ChatTemplateFamily::kGemma},
  };
  for (const auto& [file, family] : files) {
    auto f = GgufFile::open(test::testdata(file));
    auto tok = Tokenizer::from_gguf(*f);
    if (!tok->chat_template()) {
      GTEST_SKIP() << file << " has no tokenizer.chat_template";
    }
    EXPECT_EQ(detect_chat_template(*tok->chat_template()), family) << file;
  }
}

TEST(ChatTemplate, Errors) {
  // A template of no known family renders when the Jinja engine can run it...
  EXPECT_EQ(apply_chat_template("{% for m in messages %}{{ m.content }}|{% endfor %}", kChat, true, "", ""),
            "You are terse.|Hi there|Hello.|2+2?|");
  // ...and fails with both reasons when it cannot.
  try {
    apply_chat_template("{% for m in messages %}{{ m.content }}", kChat, true, "", "");
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("unrecognised"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("never closed"), std::string::npos) << e.what();
  }
  EXPECT_THROW(apply_chat_template(kChatmlTmpl, {{"robot", "x"}}, true, "", ""), InvalidArgument);
  EXPECT_THROW(apply_chat_template(kChatmlTmpl, {}, true, "", ""), InvalidArgument);
}

}  // namespace
}  // namespace pipellm
