// Chat prompts of both front doors (coordinator/chat_format.h): the model's own template rendered
// through the engine (as `pipellm generate --chat`), OpenAI's developer role as system, the
// template's refusals and bad messages as InvalidArgument naming the field; expected strings
// written out by hand from the templates.
#include <gtest/gtest.h>

#include "coordinator/chat_format.h"
#include "coordinator/status.h"

namespace pipellm::coord {
namespace {

// A ChatML template as Qwen's tokenizer_config.json writes it, reduced to its loop.
const char* const kChatml =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

Code code_of(const std::vector<ChatMessage>& m, const ChatFormat& f) {
  try {
    format_chat(m, f, true);
  } catch (const RequestError& e) {
    return e.code();
  }
  return Code::Ok;
}

TEST(ChatFormat, TheModelsTemplateRendersTheConversation) {
  const ChatFormat f{std::string(kChatml), "<|im_end|>"};
  EXPECT_EQ(format_chat({{"developer", "Be brief."}, {"user", "Hi"}}, f, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(format_chat({{"user", "Hi"}, {"assistant", "Hello"}}, f, false),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n");
}

TEST(ChatFormat, WithoutATemplateAPlainTranscript) {
  const ChatFormat f{std::nullopt, ""};
  EXPECT_EQ(format_chat({{"system", "S"}, {"user", "U"}}, f, true), "system: S\nuser: U\nassistant:");
}

TEST(ChatFormat, RefusalsNameTheField) {
  const ChatFormat f{std::string(kChatml), ""};
  EXPECT_EQ(code_of({}, f), Code::InvalidArgument);
  EXPECT_EQ(code_of({{"user", ""}}, f), Code::InvalidArgument);
  try {
    format_chat({{"user", "a"}, {"robot", "b"}}, f, true);
    FAIL() << "expected an error";
  } catch (const RequestError& e) {
    EXPECT_NE(std::string(e.what()).find("chat.messages[1].role"), std::string::npos) << e.what();
  }
  // A template that refuses the conversation (raise_exception) is the caller's error, by its words.
  const ChatFormat strict{std::string("{{ raise_exception('Conversation roles must alternate') }}"), ""};
  try {
    format_chat({{"user", "a"}}, strict, true);
    FAIL() << "expected an error";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.code(), Code::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("Conversation roles must alternate"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pipellm::coord
