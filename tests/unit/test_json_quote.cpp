// JSON for byte strings (plugin/cli/json_quote.h): always strict JSON, and lossless.
#include "plugin/cli/json_quote.h"

#include "strict_json.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <stdexcept>

using namespace snapdedupe;
using namespace std::string_literals;

namespace {

// The string a strict JSON parser reads back from json_quote(bytes), as UTF-8.
std::string parsed(const std::string& bytes)
{
    strict_json::Value v = strict_json::parse(json_quote(bytes));
    REQUIRE(v.kind == strict_json::Value::Kind::kString);
    return v.text;
}

// Our own decoding of json_quote's text, which is the scheme's promise: \u0080..\u00ff escapes
// are the raw bytes, other escapes the characters they name, everything else as written.
// Throws std::invalid_argument on anything json_quote should not write.
std::string bytes_from_quoted(const std::string& quoted)
{
    auto expect = [&](bool ok) {
        if (!ok)
            throw std::invalid_argument("not json_quote's form: " + quoted);
    };
    expect(quoted.size() >= 2 && quoted.front() == '"' && quoted.back() == '"');
    std::string out;
    for (size_t i = 1; i + 1 < quoted.size(); ++i) {
        if (quoted[i] != '\\') {
            out += quoted[i];
            continue;
        }
        char e = quoted[++i];
        if (e == '"' || e == '\\') {
            out += e;
            continue;
        }
        // json_quote escapes single bytes only, as \u00XX with lowercase hex.
        expect(e == 'u' && quoted.substr(i + 1, 2) == "00" && i + 4 < quoted.size());
        std::string hex = quoted.substr(i + 3, 2);
        expect(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
        out += static_cast<char>(std::stoi(hex, nullptr, 16));
        i += 4;
    }
    return out;
}

// Whether `quoted` is strict JSON and decodes to `bytes`: what every output must be.
bool strict_and_lossless(const std::string& quoted, const std::string& bytes)
{
    try {
        strict_json::parse(quoted);
        return bytes_from_quoted(quoted) == bytes;
    } catch (const std::invalid_argument&) {
        return false;
    }
}

// The UTF-8 encoding of a code point (not a surrogate, at most U+10FFFF).
std::string utf8_of(uint32_t cp)
{
    if (cp < 0x80)
        return std::string(1, static_cast<char>(cp));
    if (cp < 0x800)
        return {static_cast<char>(0xc0 | cp >> 6), static_cast<char>(0x80 | (cp & 0x3f))};
    if (cp < 0x10000)
        return {static_cast<char>(0xe0 | cp >> 12), static_cast<char>(0x80 | (cp >> 6 & 0x3f)),
                static_cast<char>(0x80 | (cp & 0x3f))};
    return {static_cast<char>(0xf0 | cp >> 18), static_cast<char>(0x80 | (cp >> 12 & 0x3f)),
            static_cast<char>(0x80 | (cp >> 6 & 0x3f)), static_cast<char>(0x80 | (cp & 0x3f))};
}

void check_quoted(const std::string& bytes)
{
    std::string quoted = json_quote(bytes);
    CAPTURE(quoted);
    CHECK(strict_and_lossless(quoted, bytes));
}

} // namespace

TEST_CASE("json_quote: ASCII passes through")
{
    CHECK(json_quote("") == "\"\"");
    CHECK(json_quote("/mnt/snaps/1/snapshot") == "\"/mnt/snaps/1/snapshot\"");
    CHECK(json_quote("a b'c/d") == "\"a b'c/d\"");
}

TEST_CASE("json_quote: quotes and backslashes are escaped")
{
    CHECK(json_quote("a\"b") == R"("a\"b")");
    CHECK(json_quote("a\\b") == R"("a\\b")");
    CHECK(json_quote("\"\\\"") == R"("\"\\\"")");
    CHECK(parsed("say \"hi\"\\") == "say \"hi\"\\");
}

TEST_CASE("json_quote: control bytes and DEL become \\u00XX")
{
    CHECK(json_quote("a\nb") == R"("a\u000ab")");
    CHECK(json_quote("\t\r") == R"("\u0009\u000d")");
    CHECK(json_quote("\x1f") == R"("\u001f")");
    CHECK(json_quote("\x7f") == R"("\u007f")");
    CHECK(json_quote("a\0b"s) == R"("a\u0000b")");
    CHECK(parsed("a\0b\n"s) == "a\0b\n"s);
}

TEST_CASE("json_quote: valid multi-byte UTF-8 passes through unchanged")
{
    for (const std::string& s : {"\xc3\xa9t\xc3\xa9"s,   // été: two bytes
                                "\xe2\x82\xac"s,          // €: three
                                "\xf0\x9f\x98\x80"s,      // U+1F600: four
                                "\xc2\x80"s,              // U+0080, the smallest two-byte form
                                "\xe0\xa0\x80"s,          // U+0800, the smallest three-byte form
                                "\xed\x9f\xbf"s,          // U+D7FF, just below the surrogates
                                "\xee\x80\x80"s,          // U+E000, just above them
                                "\xef\xbf\xbf"s,          // U+FFFF
                                "\xf0\x90\x80\x80"s,      // U+10000, the smallest four-byte form
                                "\xf4\x8f\xbf\xbf"s}) {   // U+10FFFF, the largest
        CAPTURE(s);
        CHECK(is_valid_utf8(s));
        CHECK(json_quote(s) == "\"" + s + "\"");
        CHECK(parsed(s) == s);
        check_quoted(s);
    }
}

TEST_CASE("json_quote: bytes outside valid UTF-8 become \\u00XX, each one")
{
    struct Case {
        std::string bytes;
        std::string quoted;
    };
    for (const Case& c : {
             Case{"\xff"s, R"("\u00ff")"},                           // a lone 0xff
             Case{"/ab\xff"s, R"("/ab\u00ff")"},
             Case{"\xfe\xff"s, R"("\u00fe\u00ff")"},
             Case{"\x80"s, R"("\u0080")"},                           // a lone continuation byte
             Case{"\xc0\xaf"s, R"("\u00c0\u00af")"},                 // overlong '/'
             Case{"\xc1\xbf"s, R"("\u00c1\u00bf")"},                 // overlong, two bytes
             Case{"\xe0\x80\xaf"s, R"("\u00e0\u0080\u00af")"},       // overlong, three bytes
             Case{"\xe0\x9f\xbf"s, R"("\u00e0\u009f\u00bf")"},
             Case{"\xf0\x80\x80\xaf"s, R"("\u00f0\u0080\u0080\u00af")"}, // overlong, four bytes
             Case{"\xf0\x8f\xbf\xbf"s, R"("\u00f0\u008f\u00bf\u00bf")"},
             Case{"\xed\xa0\x80"s, R"("\u00ed\u00a0\u0080")"},       // UTF-8 of a surrogate
             Case{"\xed\xbf\xbf"s, R"("\u00ed\u00bf\u00bf")"},
             Case{"\xf4\x90\x80\x80"s, R"("\u00f4\u0090\u0080\u0080")"}, // past U+10FFFF
             Case{"\xf5\x80\x80\x80"s, R"("\u00f5\u0080\u0080\u0080")"},
             Case{"\xe2\x82"s, R"("\u00e2\u0082")"},                 // truncated at the end
             Case{"\xe2\x82" "A"s, R"("\u00e2\u0082A")"},            // truncated before ASCII
             Case{"\xf0\x9f\x98"s, R"("\u00f0\u009f\u0098")"},
             Case{"\xe2\xe2\x82\xac"s, "\"\\u00e2\xe2\x82\xac\""},   // a bad lead, then a valid €
             Case{"\xc3\xa9\xff\xc3\xa9"s, "\"\xc3\xa9\\u00ff\xc3\xa9\""},
         }) {
        CAPTURE(c.bytes);
        CHECK_FALSE(is_valid_utf8(c.bytes));
        CHECK(json_quote(c.bytes) == c.quoted);
        check_quoted(c.bytes);
    }
}

TEST_CASE("json_quote: every string of one or two bytes is strict JSON and lossless")
{
    for (int a = 0; a < 256; ++a) {
        check_quoted(std::string(1, static_cast<char>(a)));
        for (int b = 0; b < 256; ++b) {
            std::string s{static_cast<char>(a), static_cast<char>(b)};
            std::string quoted = json_quote(s);
            // A CHECK per string would log 65536 assertions; fail at the first bad one instead.
            if (!strict_and_lossless(quoted, s)) {
                CAPTURE(quoted);
                FAIL("bytes " << a << " " << b);
            }
        }
    }
}

TEST_CASE("json_quote: random byte strings are strict JSON and lossless")
{
    std::mt19937 rng(20240609);
    // Pieces are either a valid character (of 1 to 4 bytes) or a byte that starts, continues or
    // breaks a sequence, so that valid, broken and mixed strings all turn up.
    const std::string bytes = "a/\"\\\n\x7f\x80\x8f\x90\x9f\xa0\xbf\xc0\xc2\xdf\xe0\xed\xef\xf0\xf4\xf5\xff"s;
    const uint32_t first_of[] = {0x20, 0x80, 0x800, 0xe000, 0x10000};
    const uint32_t last_of[] = {0x7e, 0x7ff, 0xd7ff, 0xffff, 0x10ffff};
    std::uniform_int_distribution<size_t> pick_byte(0, bytes.size() - 1), pick_range(0, 4), length(0, 8);
    std::uniform_int_distribution<int> coin(0, 1);
    size_t valid_multibyte = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string s;
        for (size_t n = length(rng); n > 0; --n) {
            if (coin(rng)) {
                s += bytes[pick_byte(rng)];
                continue;
            }
            size_t r = pick_range(rng);
            s += utf8_of(std::uniform_int_distribution<uint32_t>(first_of[r], last_of[r])(rng));
        }
        std::string quoted = json_quote(s);
        bool valid = is_valid_utf8(s);
        // Valid UTF-8 must also read back unchanged through a plain JSON parser.
        if (!strict_and_lossless(quoted, s) || (valid && parsed(s) != s)) {
            CAPTURE(quoted);
            FAIL("random string " << i);
        }
        valid_multibyte += valid && std::any_of(s.begin(), s.end(), [](char c) { return c & 0x80; });
    }
    CHECK(valid_multibyte > 1000); // not only broken strings
}

TEST_CASE("hex_bytes")
{
    CHECK(hex_bytes("") == "");
    CHECK(hex_bytes("/ab\xff") == "2f6162ff");
    CHECK(hex_bytes("\x00\x0f\xf0"s) == "000ff0");
}

TEST_CASE("json_bytes_member: a sibling _bytes_hex only where the string is not UTF-8")
{
    CHECK(json_bytes_member("path", "/a/\xc3\xa9") == "\"path\": \"/a/\xc3\xa9\"");
    CHECK(json_bytes_member("path", "/ab\xff") == R"("path": "/ab\u00ff", "path_bytes_hex": "2f6162ff")");

    strict_json::Value v = strict_json::parse("{" + json_bytes_member("path", "/x\xc0\xaf") + "}");
    REQUIRE(v.find("path_bytes_hex"));
    CHECK(v.find("path_bytes_hex")->text == "2f78c0af");
}

TEST_CASE("json_bytes_list_member: the sibling mirrors the array, null where valid")
{
    CHECK(json_bytes_list_member("added", {}) == R"("added": [])");
    CHECK(json_bytes_list_member("added", {"/a", "/b"}) == R"("added": ["/a", "/b"])");
    CHECK(json_bytes_list_member("added", {"/a", "/\xff", "/c"}) ==
          R"("added": ["/a", "/\u00ff", "/c"], "added_bytes_hex": [null, "2fff", null])");
    CHECK_NOTHROW(strict_json::parse("{" + json_bytes_list_member("added", {"\xfe", "x"}) + "}"));
}

TEST_CASE("json_bytes_pairs_member: the sibling mirrors the pairs")
{
    CHECK(json_bytes_pairs_member("renamed", {}) == R"("renamed": [])");
    CHECK(json_bytes_pairs_member("renamed", {{"/a", "/b"}}) == R"("renamed": [["/a", "/b"]])");
    CHECK(json_bytes_pairs_member("renamed", {{"/a", "/b"}, {"/c", "/\xff"}}) ==
          R"("renamed": [["/a", "/b"], ["/c", "/\u00ff"]], )"
          R"("renamed_bytes_hex": [[null, null], [null, "2fff"]])");
    CHECK_NOTHROW(strict_json::parse("{" + json_bytes_pairs_member("renamed", {{"\xff", "\xfe"}}) + "}"));
}
