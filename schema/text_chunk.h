// The commonest frame an adapter sends, recognised without a parse: a
// session/update carrying a chunk of text. The relay passes such a line on
// with only its session id changed, so it needs the id's place, the kind
// and the text, and that the line is exactly what a parse would accept.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace harnessd::schema {

struct TextChunk {
  std::string_view kind;  // user_message_chunk, agent_message_chunk or agent_thought_chunk
  std::pair<std::size_t, std::size_t> session_id;  // bytes of params.sessionId's string, quotes included
  std::string text;       // content.text, unescaped
};

/// `line` (valid UTF-8) when it is, spaces aside and in any member order,
/// exactly
///   {"jsonrpc":"2.0","method":"session/update","params":{"sessionId":S,
///    "update":{"sessionUpdate":K,"content":{"type":"text","text":T}}}}
/// with K one of the three chunk kinds, S a string without escapes, and
/// every member once; nothing else (no _meta, no messageId, no \u escape in
/// T, no raw control character anywhere, not even a tab between members). Otherwise nothing: the caller parses the line as usual. A line this
/// accepts parses with schema::parse_json to the same values and passes
/// schema::check_session_update.
std::optional<TextChunk> scan_text_chunk(std::string_view line);

}  // namespace harnessd::schema
