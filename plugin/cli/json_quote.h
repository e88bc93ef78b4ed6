// JSON for byte strings: btrfs names are bytes, not necessarily UTF-8, and --json must parse.
//
// json_quote writes valid UTF-8 through unchanged (escaping only '"', '\', control bytes and
// DEL) and writes each byte that is not part of a valid UTF-8 sequence as \u00XX. In our text,
// then, an escape \u0080..\u00ff always stands for such a raw byte: nothing is lost. A JSON
// parser maps those escapes to U+0080..U+00FF like any other, which loses the difference, so
// the *_member printers add a sibling "<key>_bytes_hex" with the exact bytes in hex wherever a
// string was not valid UTF-8: a string for a string, and for an array an array of the same
// shape holding null where the string was valid. Valid names get no sibling.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace snapdedupe {

// Strict UTF-8 (RFC 3629): no overlong forms, surrogates, or code points above U+10FFFF.
bool is_valid_utf8(std::string_view bytes);

// A JSON string literal, quotes included, that is valid JSON and UTF-8 for any bytes.
std::string json_quote(std::string_view bytes);

// Every byte as two lowercase hex digits.
std::string hex_bytes(std::string_view bytes);

// `"key": "value"`, and `, "key_bytes_hex": "..."` when the value is not valid UTF-8.
std::string json_bytes_member(std::string_view key, std::string_view value);

// `"key": ["a", ...]`, and `, "key_bytes_hex": [null, "...", ...]` when any is not valid UTF-8.
std::string json_bytes_list_member(std::string_view key, const std::vector<std::string>& values);

// `"key": [["a", "b"], ...]`, with a sibling of pairs of hex or null as above.
std::string json_bytes_pairs_member(std::string_view key,
                                    const std::vector<std::pair<std::string, std::string>>& values);

} // namespace snapdedupe
