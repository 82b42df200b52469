#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cairn::sdk {

// An Inngest signing key, "signkey-<env>-<hex>" (CAIRN_SIGNING_KEY on Cairn, the same
// value as INNGEST_SIGNING_KEY in the app).
class SigningKey {
  public:
    // Nullopt unless `text` is "signkey-<env>-" followed by an even number of hex digits.
    static std::optional<SigningKey> parse(std::string_view text);

    // The bearer token an SDK sends to Cairn: the prefix and the hex SHA-256 of the
    // key's bytes (its hex decoded).
    std::string bearer() const;
    // Whether an "Authorization" header value carries this key: "Bearer " and the
    // hashed form (or the key itself), compared in constant time.
    bool accepts_bearer(std::string_view authorization) const;
    // The X-Inngest-Signature value for `body` at `unix_s`: "t=<s>&s=<hex HMAC-SHA256
    // of body + t, keyed by the key's hex text>".
    std::string sign(std::string_view body, std::int64_t unix_s) const;
    // Whether `header` signs `body` with this key, made within `max_skew_s` of `now_s`
    // (its t in seconds, or in milliseconds as SDKs sign their responses).
    bool verify(std::string_view header, std::string_view body, std::int64_t now_s,
                std::int64_t max_skew_s = 300) const;

  private:
    std::string prefix_;  // "signkey-<env>-"
    std::string hex_;
};

// `line` with every "signkey-<env>-<hex>" replaced by "signkey-<env>-REDACTED", for logs.
std::string redact_signing_keys(std::string_view line);

}  // namespace cairn::sdk
