// A small, strict JSON reader for tests: RFC 8259 with no extensions, text that must be UTF-8
// (no overlong forms, surrogates or code points past U+10FFFF, no unpaired \u surrogates), no
// duplicate keys, nothing after the value. Written apart from the code it checks (it decodes
// code points where plugin/cli/json_quote.cpp matches byte ranges), so the two do not share
// a mistake.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strict_json {

struct Value {
    enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
    Kind kind = Kind::kNull;
    bool boolean = false;
    std::string text; // a number's digits as written; a string's value, decoded, as UTF-8
    std::vector<Value> items;
    std::vector<std::pair<std::string, Value>> members; // in the order written

    // The member called `key`, or nullptr (also when this is not an object).
    const Value* find(std::string_view key) const
    {
        for (const auto& [name, value] : members)
            if (name == key)
                return &value;
        return nullptr;
    }
};

class Reader {
public:
    explicit Reader(std::string_view text) : text_(text) {}

    Value document()
    {
        Value v = value();
        skip_space();
        if (pos_ != text_.size())
            fail("text after the value");
        return v;
    }

private:
    std::string_view text_;
    size_t pos_ = 0;

    [[noreturn]] void fail(const std::string& why) const
    {
        throw std::invalid_argument("JSON: " + why + " at byte " + std::to_string(pos_));
    }

    bool at_end() const { return pos_ >= text_.size(); }
    uint8_t peek() const { return at_end() ? 0 : static_cast<uint8_t>(text_[pos_]); }

    void skip_space()
    {
        while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
            ++pos_;
    }

    void expect(char c)
    {
        if (peek() != static_cast<uint8_t>(c))
            fail(std::string("expected '") + c + "'");
        ++pos_;
    }

    void literal(std::string_view word)
    {
        if (text_.substr(pos_, word.size()) != word)
            fail("bad literal");
        pos_ += word.size();
    }

    Value value()
    {
        skip_space();
        Value v;
        switch (peek()) {
        case '{': v.kind = Value::Kind::kObject; object(v); break;
        case '[': v.kind = Value::Kind::kArray; array(v); break;
        case '"': v.kind = Value::Kind::kString; v.text = string(); break;
        case 't': v.kind = Value::Kind::kBool; v.boolean = true; literal("true"); break;
        case 'f': v.kind = Value::Kind::kBool; literal("false"); break;
        case 'n': literal("null"); break;
        default: v.kind = Value::Kind::kNumber; v.text = number(); break;
        }
        return v;
    }

    void object(Value& v)
    {
        expect('{');
        skip_space();
        if (peek() == '}') {
            ++pos_;
            return;
        }
        for (;;) {
            skip_space();
            std::string key = string();
            if (v.find(key))
                fail("duplicate key " + key);
            skip_space();
            expect(':');
            v.members.emplace_back(std::move(key), value());
            skip_space();
            if (peek() == '}') {
                ++pos_;
                return;
            }
            expect(',');
        }
    }

    void array(Value& v)
    {
        expect('[');
        skip_space();
        if (peek() == ']') {
            ++pos_;
            return;
        }
        for (;;) {
            v.items.push_back(value());
            skip_space();
            if (peek() == ']') {
                ++pos_;
                return;
            }
            expect(',');
        }
    }

    std::string number()
    {
        size_t start = pos_;
        auto digits = [&] {
            size_t from = pos_;
            while (!at_end() && peek() >= '0' && peek() <= '9')
                ++pos_;
            if (pos_ == from)
                fail("expected a digit");
        };
        if (peek() == '-')
            ++pos_;
        if (peek() == '0')
            ++pos_;
        else
            digits();
        if (peek() == '.') {
            ++pos_;
            digits();
        }
        if (peek() == 'e' || peek() == 'E') {
            ++pos_;
            if (peek() == '+' || peek() == '-')
                ++pos_;
            digits();
        }
        return std::string(text_.substr(start, pos_ - start));
    }

    uint32_t hex4()
    {
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i, ++pos_) {
            uint8_t c = peek();
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0)
                fail("bad \\u escape");
            v = v * 16 + static_cast<uint32_t>(d);
        }
        return v;
    }

    // One raw UTF-8 character of the text, decoded and checked for the shortest form.
    uint32_t raw_code_point()
    {
        uint8_t lead = peek();
        int extra = lead < 0x80                  ? 0
                    : lead >= 0xc0 && lead < 0xe0 ? 1
                    : lead >= 0xe0 && lead < 0xf0 ? 2
                    : lead >= 0xf0 && lead < 0xf8 ? 3
                                                  : -1; // a continuation byte, or F8..FF
        if (extra < 0)
            fail("byte that cannot start UTF-8");
        uint32_t cp = extra == 0 ? lead : lead & (0x3f >> extra);
        ++pos_;
        for (int i = 0; i < extra; ++i, ++pos_) {
            if (at_end() || (peek() & 0xc0) != 0x80)
                fail("truncated UTF-8");
            cp = cp << 6 | (peek() & 0x3f);
        }
        static constexpr uint32_t kSmallest[] = {0, 0x80, 0x800, 0x10000};
        if (cp < kSmallest[extra])
            fail("overlong UTF-8");
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            fail("UTF-8 of a surrogate or past U+10FFFF");
        return cp;
    }

    uint32_t escape()
    {
        ++pos_; // the backslash
        uint8_t c = peek();
        ++pos_;
        switch (c) {
        case '"': return '"';
        case '\\': return '\\';
        case '/': return '/';
        case 'b': return '\b';
        case 'f': return '\f';
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case 'u': break;
        default: fail("bad escape");
        }
        uint32_t cp = hex4();
        if (cp >= 0xdc00 && cp <= 0xdfff)
            fail("unpaired low surrogate");
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (text_.substr(pos_, 2) != "\\u")
                fail("unpaired high surrogate");
            pos_ += 2;
            uint32_t low = hex4();
            if (low < 0xdc00 || low > 0xdfff)
                fail("unpaired high surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
        }
        return cp;
    }

    static void append_utf8(std::string& out, uint32_t cp)
    {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | cp >> 6);
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xe0 | cp >> 12);
            out += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
            out += static_cast<char>(0xf0 | cp >> 18);
            out += static_cast<char>(0x80 | (cp >> 12 & 0x3f));
            out += static_cast<char>(0x80 | (cp >> 6 & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        }
    }

    std::string string()
    {
        expect('"');
        std::string out;
        for (;;) {
            if (at_end())
                fail("unterminated string");
            uint8_t c = peek();
            if (c == '"') {
                ++pos_;
                return out;
            }
            if (c < 0x20)
                fail("raw control character in a string");
            append_utf8(out, c == '\\' ? escape() : raw_code_point());
        }
    }
};

// Parses `text`; throws std::invalid_argument saying what and where if it is not strict JSON.
inline Value parse(std::string_view text)
{
    return Reader(text).document();
}

// Equal as JSON values: objects compare as sets of members, numbers as written.
inline bool same(const Value& a, const Value& b)
{
    if (a.kind != b.kind || a.boolean != b.boolean || a.text != b.text || a.items.size() != b.items.size() ||
        a.members.size() != b.members.size())
        return false;
    for (size_t i = 0; i < a.items.size(); ++i)
        if (!same(a.items[i], b.items[i]))
            return false;
    for (const auto& [key, value] : a.members) {
        const Value* other = b.find(key);
        if (!other || !same(value, *other))
            return false;
    }
    return true;
}

} // namespace strict_json
