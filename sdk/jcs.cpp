#include "sdk/jcs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace cairn::sdk {

namespace {

// A double as ECMAScript's Number.prototype.toString prints it: the shortest digits that
// read back to the same value, in fixed notation from 1e-6 up to 1e21, else exponential.
void number(std::string& out, double d) {
    if (!std::isfinite(d)) throw std::invalid_argument("JSON cannot hold NaN or infinity");
    if (d == 0) {
        out += '0';
        return;
    }
    if (d < 0) {
        out += '-';
        d = -d;
    }
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    const std::string_view sci(buf, static_cast<std::size_t>(res.ptr - buf));
    const std::size_t e_at = sci.find('e');
    std::string digits;
    for (char c : sci.substr(0, e_at)) {
        if (c != '.') digits += c;
    }
    while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
    int exp = 0;
    std::from_chars(sci.data() + e_at + (sci[e_at + 1] == '+' ? 2 : 1), sci.data() + sci.size(),
                    exp);
    const int k = static_cast<int>(digits.size());
    const int n = exp + 1;  // the value is 0.digits × 10^n
    if (k <= n && n <= 21) {
        out += digits;
        out.append(static_cast<std::size_t>(n - k), '0');
    } else if (0 < n && n <= 21) {
        out += digits.substr(0, static_cast<std::size_t>(n));
        out += '.';
        out += digits.substr(static_cast<std::size_t>(n));
    } else if (-6 < n && n <= 0) {
        out += "0.";
        out.append(static_cast<std::size_t>(-n), '0');
        out += digits;
    } else {
        out += digits[0];
        if (k > 1) {
            out += '.';
            out += digits.substr(1);
        }
        out += fmt::format("e{}{}", n - 1 >= 0 ? "+" : "-", std::abs(n - 1));
    }
}

void string(std::string& out, const std::string& s) {
    out += '"';
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\b':
                out += "\\b";
                break;
            case '\f':
                out += "\\f";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (c < 0x20) {
                    out += fmt::format("\\u{:04x}", c);
                } else {
                    out += ch;
                }
        }
    }
    out += '"';
}

// UTF-16 code units of a UTF-8 key, for RFC 8785's key order.
std::u16string utf16(const std::string& s) {
    std::u16string out;
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        char32_t cp = c;
        std::size_t len = 1;
        if (c >= 0xF0) {
            cp = c & 0x07U;
            len = 4;
        } else if (c >= 0xE0) {
            cp = c & 0x0FU;
            len = 3;
        } else if (c >= 0xC0) {
            cp = c & 0x1FU;
            len = 2;
        }
        for (std::size_t j = 1; j < len && i + j < s.size(); ++j)
            cp = (cp << 6) | (static_cast<unsigned char>(s[i + j]) & 0x3FU);
        i += len;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            out += static_cast<char16_t>(0xD800 + (cp >> 10));
            out += static_cast<char16_t>(0xDC00 + (cp & 0x3FF));
        } else {
            out += static_cast<char16_t>(cp);
        }
    }
    return out;
}

void value(std::string& out, const json& j) {
    switch (j.type()) {
        case json::value_t::null:
            out += "null";
            break;
        case json::value_t::boolean:
            out += j.get<bool>() ? "true" : "false";
            break;
        case json::value_t::number_integer:
        case json::value_t::number_unsigned: {
            // A JavaScript reader holds every number as a double: past 2^53 the digits it
            // prints are the double's.
            constexpr std::uint64_t kExact = std::uint64_t{1} << 53;
            const bool exact = j.is_number_unsigned()
                                   ? j.get<std::uint64_t>() <= kExact
                                   : j.get<std::int64_t>() >= -static_cast<std::int64_t>(kExact) &&
                                         j.get<std::int64_t>() <= static_cast<std::int64_t>(kExact);
            if (exact) {
                out += j.dump();
            } else {
                number(out, j.get<double>());
            }
            break;
        }
        case json::value_t::number_float:
            number(out, j.get<double>());
            break;
        case json::value_t::string:
            string(out, j.get_ref<const std::string&>());
            break;
        case json::value_t::array: {
            out += '[';
            bool first = true;
            for (const json& item : j) {
                if (!first) out += ',';
                first = false;
                value(out, item);
            }
            out += ']';
            break;
        }
        case json::value_t::object: {
            // nlohmann keeps keys in byte order, which is UTF-16 order unless a key holds a
            // character beyond U+FFFF; only then sort again.
            std::vector<const std::string*> keys;
            bool wide = false;
            for (auto it = j.begin(); it != j.end(); ++it) {
                const std::string& k = it.key();
                keys.push_back(&k);
                wide = wide || std::any_of(k.begin(), k.end(), [](char c) {
                           return static_cast<unsigned char>(c) >= 0xF0;
                       });
            }
            if (wide) {
                std::stable_sort(keys.begin(), keys.end(),
                                 [](const std::string* a, const std::string* b) {
                                     return utf16(*a) < utf16(*b);
                                 });
            }
            out += '{';
            bool first = true;
            for (const std::string* k : keys) {
                if (!first) out += ',';
                first = false;
                string(out, *k);
                out += ':';
                value(out, j.at(*k));
            }
            out += '}';
            break;
        }
        default:
            out += "null";  // binary and discarded values do not come from JSON text
    }
}

}  // namespace

std::string canonical(const json& j) {
    std::string out;
    value(out, j);
    return out;
}

}  // namespace cairn::sdk
