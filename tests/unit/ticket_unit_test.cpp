// Pure parts of the ticket plugin: the heuristic analyser, skill normalisation, model
// output validation, JWTs, RFC 3339 parsing and the rate limiter.

#include <doctest/doctest.h>

#include <set>

#include "common/time.hpp"
#include "plugins/ticket/ai.hpp"
#include "plugins/ticket/auth.hpp"

using namespace cairn;
using namespace cairn::ticket;

namespace {
constexpr std::int64_t kNow = 1'795'000'000'000;  // 2026-11-19

Analysis analyse(std::string title, std::string description, std::vector<std::string> tags = {},
                 std::optional<std::int64_t> deadline = std::nullopt) {
    TicketText t{std::move(title), std::move(description), std::move(tags), deadline, kNow};
    return make_heuristic_analyzer()->analyse(t);
}
bool has(const std::vector<std::string>& v, std::string_view s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}
}  // namespace

TEST_CASE("the skill taxonomy has at least 60 skills, each with synonyms and a checklist") {
    const auto& skills = skill_taxonomy();
    CHECK(skills.size() >= 60);
    std::set<std::string_view> names, words;
    for (const auto& s : skills) {
        CAPTURE(s.name);
        CHECK(names.insert(s.name).second);
        CHECK(!s.synonyms.empty());
        CHECK(!s.checklist.empty());
        for (auto w : s.synonyms)
            CHECK_MESSAGE(words.insert(w).second, "synonym used twice: " << w);
    }
}

TEST_CASE("skills are normalised: case, spaces and synonyms") {
    CHECK(normalize_skill("  ReactJS ") == "react");
    CHECK(normalize_skill("Postgres") == "postgresql");
    CHECK(normalize_skill("K8S") == "kubernetes");
    CHECK(normalize_skill("Machine   Learning") == "machine learning");
    CHECK(normalize_skill("underwater basket weaving") == "underwater basket weaving");
    CHECK(normalize_skill("   ").empty());
}

TEST_CASE("heuristic priority: outages, security, data loss and payments are high") {
    CHECK(analyse("Production outage", "Everything returns 502 since 9am").priority == "high");
    CHECK(analyse("Possible breach", "We saw an exploit attempt in the logs").priority == "high");
    CHECK(analyse("Data loss after migration", "half the rows are gone").priority == "high");
    CHECK(analyse("Customer charged twice", "the invoice shows two charges").priority == "high");
}

TEST_CASE("heuristic priority: typos and questions are low, ordinary bugs medium") {
    CHECK(analyse("Typo on the pricing page", "It says 'anual' instead of 'annual'").priority ==
          "low");
    CHECK(analyse("Question about exports", "How do I export my data to CSV?").priority == "low");
    CHECK(analyse("Export button error", "Clicking export shows an error dialog").priority ==
          "medium");
    CHECK(analyse("Hello", "Just saying hi").priority == "medium");
}

TEST_CASE("heuristic priority: a deadline within a day makes a ticket high") {
    const auto soon = analyse("Typo on the pricing page", "cosmetic", {}, kNow + 3 * 3'600'000);
    CHECK(soon.priority == "high");
    CHECK(soon.helpful_notes.find("deadline in 3 h") != std::string::npos);
    CHECK(analyse("Typo", "cosmetic", {}, kNow + 30 * 86'400'000LL).priority == "low");
}

TEST_CASE("heuristic skills come from title, description and tags; notes from checklists") {
    const auto a = analyse("Checkout page blank in React",
                           "The Postgres query behind the API times out", {"docker"});
    CHECK(has(a.related_skills, "react"));
    CHECK(has(a.related_skills, "postgresql"));
    CHECK(has(a.related_skills, "docker"));
    CHECK(a.related_skills.size() <= 5);
    CHECK(a.helpful_notes.find("pg_stat_activity") != std::string::npos);
    CHECK(a.summary.find('\n') == std::string::npos);
    CHECK(!a.summary.empty());
    // Deterministic: the same ticket gives the same analysis.
    const auto b = analyse("Checkout page blank in React",
                           "The Postgres query behind the API times out", {"docker"});
    CHECK(b.related_skills == a.related_skills);
    CHECK(b.helpful_notes == a.helpful_notes);
    // Whole words only: "going" is not Go, "paid" is not "ai".
    CHECK(!has(analyse("We are going to be paid", "nothing").related_skills, "go"));
}

TEST_CASE("model output is validated field by field") {
    const json good = {{"priority", "High"},
                       {"helpful_notes", "Check the logs"},
                       {"related_skills", {"ReactJS", "react", "Postgres"}},
                       {"summary", "Line one\nline two"}};
    const auto a = validate_analysis(good);
    CHECK(a.priority == "high");
    CHECK(a.related_skills == std::vector<std::string>{"react", "postgresql"});
    CHECK(a.summary == "Line one line two");
    auto without = [&](const char* field) {
        json j = good;
        j.erase(field);
        return j;
    };
    CHECK_THROWS_AS(validate_analysis(without("priority")), std::runtime_error);
    CHECK_THROWS_AS(validate_analysis(without("summary")), std::runtime_error);
    CHECK_THROWS_AS(validate_analysis(without("related_skills")), std::runtime_error);
    CHECK_THROWS_AS(validate_analysis(json{{"priority", "whenever"},
                                           {"helpful_notes", "x"},
                                           {"related_skills", json::array()},
                                           {"summary", "s"}}),
                    std::runtime_error);
    CHECK_THROWS_AS(validate_analysis(json::array()), std::runtime_error);
    json wrong_type = good;
    wrong_type["related_skills"] = {1, 2};
    CHECK_THROWS_AS(validate_analysis(wrong_type), std::runtime_error);
}

TEST_CASE("JWT: HS256 tokens verify; tampering, other keys, alg=none and expiry do not") {
    Jwt jwt("0123456789abcdef0123456789abcdef");
    const auto token = jwt.sign({{"sub", "u1"}, {"exp", 2000}});
    auto claims = jwt.verify(token, 1000);
    REQUIRE(claims);
    CHECK((*claims)["sub"] == "u1");
    CHECK_FALSE(jwt.verify(token, 2000));  // expired
    CHECK_FALSE(Jwt("another secret, also 32 bytes long!!").verify(token, 1000));
    std::string tampered = token;
    tampered[tampered.find('.') + 2] ^= 1;
    CHECK_FALSE(jwt.verify(tampered, 1000));
    const auto dot = token.find('.');
    const std::string none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0" + token.substr(dot, token.rfind('.') - dot) + ".";
    CHECK_FALSE(jwt.verify(none, 1000));
    CHECK_FALSE(jwt.verify("a.b", 1000));
    CHECK_FALSE(jwt.verify("", 1000));
}

TEST_CASE("verified tokens: found again until expiry, by exact text only, and bounded") {
    VerifiedTokens cache(2);
    const std::string token = "header.payload.signature";
    CHECK_FALSE(cache.find(token, 1000));
    cache.add(token, {"u1", "s1", 2000}, 1000);
    const auto hit = cache.find(token, 1999);
    REQUIRE(hit);
    CHECK(hit->user_id == "u1");
    CHECK(hit->session_id == "s1");
    CHECK(hit->exp_s == 2000);
    CHECK_FALSE(cache.find(token, 2000));  // expired
    CHECK_FALSE(cache.find("header.payload.signaturE", 1000));
    CHECK_FALSE(cache.find("header.payload.signature ", 1000));
    CHECK_FALSE(cache.find("", 1000));
    // Full: the expired entry goes first, the live one stays.
    cache.add("short-lived", {"u2", "s2", 1500}, 1000);
    CHECK(cache.size() == 2);
    cache.add("third", {"u3", "s3", 9000}, 1600);
    CHECK(cache.size() == 2);
    CHECK(cache.find(token, 1600));
    CHECK(cache.find("third", 1600)->user_id == "u3");
    CHECK_FALSE(cache.find("short-lived", 1400));
    // Full of live entries: all of them go, the new one is kept.
    cache.add("fourth", {"u4", "s4", 9000}, 1600);
    CHECK(cache.size() == 1);
    CHECK(cache.find("fourth", 1600));
    CHECK_FALSE(cache.find(token, 1600));
    // Another process (another key) knows none of these.
    CHECK_FALSE(VerifiedTokens(2).find("fourth", 1600));
}

TEST_CASE("passwords: Argon2id hashes verify only the same password") {
    const auto h = hash_password("correct horse");
    CHECK(h.starts_with("$argon2id$"));
    CHECK(verify_password(h, "correct horse"));
    CHECK_FALSE(verify_password(h, "correct horsE"));
    CHECK(hash_password("correct horse") != h);  // salted
}

TEST_CASE("RFC 3339 parsing") {
    CHECK(parse_rfc3339("1970-01-01T00:00:00Z") == 0);
    CHECK(parse_rfc3339("2026-11-22T10:15:30.123Z") == 1'795'342'530'123);
    CHECK(parse_rfc3339("2026-11-22T11:15:30.123+01:00") == 1'795'342'530'123);
    CHECK(parse_rfc3339("2026-11-22T05:15:30.1234-05:00") == 1'795'342'530'123);
    CHECK_FALSE(parse_rfc3339("2026-02-30T00:00:00Z"));
    CHECK_FALSE(parse_rfc3339("2026-11-22 10:15:30Z"));
    CHECK_FALSE(parse_rfc3339("2026-11-22T10:15:30"));
    CHECK_FALSE(parse_rfc3339("2026-11-22T10:15:30Zjunk"));
    CHECK_FALSE(parse_rfc3339("tomorrow"));
    CHECK_FALSE(parse_rfc3339(""));
    CHECK(format_rfc3339(*parse_rfc3339("2026-11-22T10:15:30.123Z")) == "2026-11-22T10:15:30.123Z");
}

TEST_CASE("rate limiter: a burst, then one token per 60/N seconds, per key") {
    RateLimiter limiter(3);
    CHECK_FALSE(limiter.take("a", 0));
    CHECK_FALSE(limiter.take("a", 0));
    CHECK_FALSE(limiter.take("a", 0));
    const auto wait = limiter.take("a", 0);
    REQUIRE(wait);
    CHECK(*wait == 20);
    CHECK_FALSE(limiter.take("b", 0));  // other keys are unaffected
    CHECK(limiter.take("a", 19'000));
    CHECK_FALSE(limiter.take("a", 20'500));
    // check() looks without taking; reset() refills.
    CHECK(limiter.check("a", 20'500));
    CHECK(limiter.check("a", 20'500));
    limiter.reset("a");
    CHECK_FALSE(limiter.check("a", 20'500));
    CHECK_FALSE(limiter.take("a", 20'500));
}
