#include "plugins/ticket/mail.hpp"

#include <curl/curl.h>
#include <fmt/format.h>
#include <sodium.h>

#include <cstring>
#include <stdexcept>

#include "common/ids.hpp"
#include "common/time.hpp"
#include "plugins/ticket/http_client.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {
namespace {

bool already_sent(storage::Database& db, const std::string& key) {
    return !key.empty() &&
           !db.read("SELECT 1 FROM mail_outbox WHERE idempotency_key = $1", key).empty();
}

void record(storage::Database& db, const Mail& m, std::string_view transport) {
    db.exec(
        "INSERT INTO mail_outbox (id, idempotency_key, to_addr, subject, body, transport, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING",
        new_id(), m.idempotency_key.empty() ? new_id() : m.idempotency_key, m.to, m.subject, m.body,
        transport, now_ms());
}

// Header values may not carry line breaks (header injection).
std::string one_line(std::string_view s) {
    std::string out;
    for (char c : s) out.push_back(c == '\r' || c == '\n' ? ' ' : c);
    return out;
}

// RFC 2047 encoded-word for a non-ASCII subject.
std::string encode_header(const std::string& s) {
    bool ascii = true;
    for (unsigned char c : s) ascii = ascii && c < 0x80;
    if (ascii) return s;
    std::string b64(sodium_base64_ENCODED_LEN(s.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
    sodium_bin2base64(b64.data(), b64.size(), reinterpret_cast<const unsigned char*>(s.data()),
                      s.size(), sodium_base64_VARIANT_ORIGINAL);
    b64.resize(std::strlen(b64.c_str()));
    return "=?UTF-8?B?" + b64 + "?=";
}

// The address inside "Name <addr>", or the whole text.
std::string bare_address(const std::string& s) {
    const auto lt = s.find('<');
    const auto gt = s.find('>', lt == std::string::npos ? 0 : lt);
    if (lt != std::string::npos && gt != std::string::npos) return s.substr(lt + 1, gt - lt - 1);
    return s;
}

class OutboxMailer final : public Mailer {
  public:
    explicit OutboxMailer(storage::Database& db) : db_(db) {}
    std::string_view name() const override { return "outbox"; }
    bool send(const Mail& mail) override {
        if (already_sent(db_, mail.idempotency_key)) return false;
        record(db_, mail, "outbox");
        return true;
    }

  private:
    storage::Database& db_;
};

class SmtpMailer final : public Mailer {
  public:
    SmtpMailer(std::string url, long use_ssl, std::string from, storage::Database& db)
        : url_(std::move(url)), use_ssl_(use_ssl), from_(std::move(from)), db_(db) {
        init_curl();
    }
    std::string_view name() const override { return "smtp"; }

    bool send(const Mail& mail) override {
        if (already_sent(db_, mail.idempotency_key)) return false;
        const std::string message = format_message(mail);
        struct Source {
            const std::string* text;
            std::size_t pos = 0;
        } source{&message};
        auto read = [](char* buffer, std::size_t size, std::size_t n, void* user) -> std::size_t {
            auto* src = static_cast<Source*>(user);
            const std::size_t left = src->text->size() - src->pos;
            const std::size_t len = std::min(left, size * n);
            std::memcpy(buffer, src->text->data() + src->pos, len);
            src->pos += len;
            return len;
        };
        std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(),
                                                                 curl_easy_cleanup);
        if (!curl) throw std::runtime_error("smtp: cannot create a libcurl handle");
        const std::string to = bare_address(one_line(mail.to));
        std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> rcpt(
            curl_slist_append(nullptr, to.c_str()), curl_slist_free_all);
        // fmt, not operator+: GCC 12 at -O3 reports a false -Wrestrict on "<" + s.
        const std::string from = fmt::format("<{}>", bare_address(from_));
        CURL* h = curl.get();
        curl_easy_setopt(h, CURLOPT_URL, url_.c_str());
        curl_easy_setopt(h, CURLOPT_USE_SSL, use_ssl_);
        curl_easy_setopt(h, CURLOPT_MAIL_FROM, from.c_str());
        curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt.get());
        curl_easy_setopt(h, CURLOPT_READFUNCTION, +read);
        curl_easy_setopt(h, CURLOPT_READDATA, &source);
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30'000L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10'000L);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        const CURLcode rc = curl_easy_perform(h);
        if (rc != CURLE_OK)
            throw std::runtime_error(
                fmt::format("smtp: sending to {} failed: {}", to, curl_easy_strerror(rc)));
        record(db_, mail, "smtp");
        return true;
    }

  private:
    std::string format_message(const Mail& m) const {
        std::string body;
        for (std::size_t i = 0; i < m.body.size(); ++i) {
            if (m.body[i] == '\n' && (i == 0 || m.body[i - 1] != '\r')) body += '\r';
            body += m.body[i];
        }
        return fmt::format(
            "Date: {}\r\nFrom: {}\r\nTo: {}\r\nSubject: {}\r\nMessage-ID: <{}@cairn>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
            rfc5322_date(), one_line(from_), one_line(m.to), encode_header(one_line(m.subject)),
            new_id(), body);
    }
    static std::string rfc5322_date() {
        char buf[64];
        const std::time_t t = std::time(nullptr);
        std::tm tm{};
        gmtime_r(&t, &tm);
        std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
        return buf;
    }

    std::string url_;
    long use_ssl_;
    std::string from_;
    storage::Database& db_;
};

}  // namespace

std::string redact_mail_spec(std::string_view spec) {
    std::string s(spec);
    const auto scheme = s.find("://");
    const auto at = s.rfind('@');
    if (scheme == std::string::npos || at == std::string::npos || at < scheme) return s;
    const auto colon = s.find(':', scheme + 3);
    if (colon != std::string::npos && colon < at) s.replace(colon + 1, at - colon - 1, "***");
    return s;
}

std::unique_ptr<Mailer> make_mailer(std::string_view spec, std::string from,
                                    storage::Database& db) {
    if (spec.empty() || spec == "outbox") return std::make_unique<OutboxMailer>(db);
    const bool smtps = spec.starts_with("smtps://");
    if (!smtps && !spec.starts_with("smtp://"))
        throw std::invalid_argument(
            fmt::format("CAIRN_MAIL '{}' is not outbox, smtp://user:pass@host:port or smtps://...",
                        redact_mail_spec(spec)));
    std::string url(spec);
    // TLS is required unless the spec asks for less: an opportunistic STARTTLS is dropped
    // by anyone on the path, who then reads the password and the mail.
    long use_ssl = CURLUSESSL_ALL;
    if (const auto q = url.find('?'); q != std::string::npos) {
        const std::string query = url.substr(q + 1);
        url.resize(q);
        if (query == "tls=required")
            use_ssl = CURLUSESSL_ALL;
        else if (query == "tls=none")
            use_ssl = CURLUSESSL_NONE;
        else if (query == "tls=try")
            use_ssl = CURLUSESSL_TRY;
        else
            throw std::invalid_argument(fmt::format(
                "CAIRN_MAIL option '{}' is not tls=required, tls=try or tls=none", query));
    }
    const auto host_start = url.find("://") + 3;
    const auto at = url.rfind('@');
    const std::string host =
        url.substr(at == std::string::npos || at < host_start ? host_start : at + 1);
    if (host.empty() || host.front() == ':' || host.front() == '/')
        throw std::invalid_argument("CAIRN_MAIL: the SMTP URL has no host");
    return std::make_unique<SmtpMailer>(url, use_ssl, std::move(from), db);
}

std::vector<OutboxEntry> list_outbox(storage::Database& db, const std::optional<std::string>& to,
                                     int limit) {
    const auto rows = db.read(
        "SELECT id, to_addr, subject, body, transport, created_at FROM mail_outbox "
        "WHERE (CAST($1 AS TEXT) IS NULL OR to_addr = $1) ORDER BY created_at DESC, id DESC LIMIT "
        "$2",
        to, limit);
    std::vector<OutboxEntry> out;
    for (const auto& r : rows) {
        out.push_back({r.get<std::string>(0), r.get<std::string>(1), r.get<std::string>(2),
                       r.get<std::string>(3), r.get<std::string>(4), r.get<std::int64_t>(5)});
    }
    return out;
}

}  // namespace cairn::ticket
