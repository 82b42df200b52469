#include <doctest/doctest.h>

#include "sdk/config.hpp"
#include "sdk/jcs.hpp"
#include "sdk/signing.hpp"

using cairn::json;
using namespace cairn::sdk;

TEST_CASE("canonical JSON: RFC 8785 key order, escapes and numbers") {
    CHECK(canonical(json::parse(R"({"b":1,"a":{"d":[1,2,{"z":null,"y":true}],"c":"x"}})")) ==
          R"({"a":{"c":"x","d":[1,2,{"y":true,"z":null}]},"b":1})");
    CHECK(canonical(json("tab\there \"q\" \\ \x01 é")) ==
          "\"tab\\there \\\"q\\\" \\\\ \\u0001 é\"");
    // Numbers as ECMAScript prints them (RFC 8785's own examples among them).
    CHECK(canonical(json(0.0)) == "0");
    CHECK(canonical(json(-0.0)) == "0");
    CHECK(canonical(json(1.0)) == "1");
    CHECK(canonical(json(0.5)) == "0.5");
    CHECK(canonical(json(1e21)) == "1e+21");
    CHECK(canonical(json(1e20)) == "100000000000000000000");
    CHECK(canonical(json(1e-7)) == "1e-7");
    CHECK(canonical(json(0.000001)) == "0.000001");
    CHECK(canonical(json(123.456)) == "123.456");
    CHECK(canonical(json(-1.5e-10)) == "-1.5e-10");
    CHECK(canonical(json(333333333.33333329)) == "333333333.3333333");
    CHECK(canonical(json(9007199254740993LL)) == "9007199254740992");  // past 2^53: the double's
    CHECK(canonical(json(-42)) == "-42");
    // A key beyond U+FFFF sorts by its UTF-16 surrogates (D800..DFFF), before U+E000..U+FFFF.
    CHECK(canonical(json::parse("{\"\xef\xbd\x81\":1,\"\xf0\x9f\x98\x80\":2}")) ==
          "{\"\xf0\x9f\x98\x80\":2,\"\xef\xbd\x81\":1}");
}

TEST_CASE("signing: the SDK's test vectors") {
    const auto key = SigningKey::parse("signkey-test-12345678abcdef");
    REQUIRE(key);
    const std::string body =
        R"({"ctx":{"attempt":0,"run_id":"r"},"event":{"data":{"a":2,"b":1},"name":"a"},"steps":{},"version":1})";
    CHECK(key->sign(body, 1700000000) ==
          "t=1700000000&s=e99c2fd14e0be0707fe530399872174328fc5a659ccf9e20487a197c3d8e4f93");
    CHECK(key->bearer() ==
          "signkey-test-790477b138b1c953127edeb0229e15bb15983b97cb388a9d357b52dcc2f3627e");
    CHECK(key->accepts_bearer("Bearer " + key->bearer()));
    CHECK(key->accepts_bearer(
        "bearer signkey-prod-790477b138b1c953127edeb0229e15bb15983b97cb388a9d357b52dcc2f3627e"));
    CHECK(key->accepts_bearer("Bearer 12345678abcdef"));
    CHECK_FALSE(key->accepts_bearer("Bearer undefined"));
    CHECK_FALSE(key->accepts_bearer(""));
    CHECK_FALSE(key->accepts_bearer(
        "Bearer signkey-test-790477b138b1c953127edeb0229e15bb15983b97cb388a9d357b52dcc2f3627f"));

    const std::string sig = key->sign(body, 1700000000);
    CHECK(key->verify(sig, body, 1700000100));
    CHECK_FALSE(key->verify(sig, body, 1700000400));        // over five minutes old
    CHECK_FALSE(key->verify(sig, body + " ", 1700000000));  // another body
    CHECK_FALSE(key->verify("t=1700000000", body, 1700000000));
    CHECK_FALSE(key->verify("garbage", body, 1700000000));
    // A response signed with milliseconds, as SDKs sign theirs.
    CHECK(key->verify(key->sign(body, 1700000000123), body, 1700000000));
    const auto other = SigningKey::parse("signkey-test-12345678abcdee");
    CHECK_FALSE(other->verify(sig, body, 1700000000));
}

TEST_CASE("signing keys: parsing and redaction") {
    CHECK_FALSE(SigningKey::parse("12345678"));
    CHECK_FALSE(SigningKey::parse("signkey-test-123"));   // odd
    CHECK_FALSE(SigningKey::parse("signkey-test-12zz"));  // not hex
    CHECK_FALSE(SigningKey::parse("signkey--1234"));      // no env
    CHECK(SigningKey::parse("signkey-branch_1-abcd"));
    CHECK(redact_signing_keys("key signkey-prod-abcdef0123 and signkey-test-99.") ==
          "key signkey-prod-REDACTED and signkey-test-REDACTED.");
    CHECK(redact_signing_keys("no key; signkey- alone") == "no key; signkey- alone");
}

TEST_CASE("durations and deadlines as SDKs write them") {
    CHECK(parse_sdk_duration("1h30m") == 5'400'000);
    CHECK(parse_sdk_duration("2d") == 172'800'000);
    CHECK(parse_sdk_duration("1w") == 604'800'000);
    CHECK(parse_sdk_duration("500ms") == 500);
    CHECK(parse_sdk_duration("") == 0);
    CHECK_FALSE(parse_sdk_duration("5"));
    CHECK_FALSE(parse_sdk_duration("5y"));
    CHECK_FALSE(parse_sdk_duration("h"));
    CHECK(parse_deadline("30s", 1000) == 31'000);
    CHECK(parse_deadline("2026-12-07T10:00:00.000Z", 0) == 1796637600000);
    CHECK_FALSE(parse_deadline("tomorrow", 0));
}

namespace {

json registration(json functions) {
    return {{"appName", "shop"},
            {"url", "http://app:3000/api/inngest"},
            {"sdk", "js:v3.38.0"},
            {"framework", "express"},
            {"functions", std::move(functions)}};
}

json function(std::string id, json extra = json::object()) {
    json f = {{"id", "shop-" + id},
              {"name", id},
              {"triggers", {{{"event", "shop/" + id}}}},
              {"steps",
               {{"step",
                 {{"id", "step"},
                  {"name", "step"},
                  {"runtime",
                   {{"type", "http"},
                    {"url", "http://app:3000/api/inngest?fnId=shop-" + id + "&stepId=step"}}}}}}}};
    f.update(extra);
    return f;
}

std::string refusal(const json& body) {
    try {
        parse_registration(body);
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("registrations: what Cairn takes from a function's config") {
    json f = function("order", {{"cancel",
                                 {{{"event", "shop/cancelled"},
                                   {"if", "event.data.id == async.data.id"},
                                   {"timeout", "1h"}}}},
                                {"throttle", {{"limit", 1}, {"period", "1m"}}}});
    f["steps"]["step"]["retries"] = {{"attempts", 5}};
    f["triggers"].push_back({{"event", "shop/other"}, {"expression", "event.data.vip == true"}});
    f["triggers"].push_back({{"cron", "TZ=Europe/Paris 0 3 * * *"}});
    const Registration r = parse_registration(registration({f, function("plain")}));
    CHECK(r.app_id == "shop");
    REQUIRE(r.functions.size() == 2);
    const FunctionConfig& c = r.functions[0];
    CHECK(c.slug == "shop-order");
    CHECK(c.retries == 5);
    CHECK(c.triggers.size() == 3);
    CHECK(c.triggers[2].cron == "TZ=Europe/Paris 0 3 * * *");
    REQUIRE(c.cancel.size() == 1);
    CHECK(c.cancel[0].timeout == std::chrono::hours(1));
    CHECK(c.warnings.empty());
    REQUIRE(c.flow.throttle);
    CHECK(c.flow.throttle->limit == 1);
    CHECK(c.flow.throttle->period == std::chrono::minutes(1));
    CHECK(c.flow.throttle->burst == 1);
    CHECK(r.functions[1].retries == 3);  // the SDK's default
    CHECK(!r.functions[1].flow.any());
}

TEST_CASE("registrations: flow control in each form the SDK sends") {
    const auto one = [](json settings) {
        return parse_registration(registration({function("f", std::move(settings))})).functions[0];
    };
    CHECK(one({{"concurrency", 3}}).flow.concurrency.at(0).limit == 3);
    const auto two = one({{"concurrency",
                           {{{"limit", 2}, {"key", "event.data.customer"}},
                            {{"limit", 10}, {"scope", "env"}, {"key", "event.data.tenant"}}}}});
    REQUIRE(two.flow.concurrency.size() == 2);
    CHECK(two.flow.concurrency[0].key == "event.data.customer");
    CHECK(two.warnings.size() == 1);  // env scope counts per function
    const auto all = one({{"rateLimit", {{"limit", 5}, {"period", "1h"}, {"key", "event.data.u"}}},
                          {"debounce", {{"period", "5s"}, {"timeout", "1m"}}},
                          {"priority", {{"run", "event.data.p"}}},
                          {"singleton", {{"mode", "cancel"}, {"key", "event.data.u"}}},
                          {"idempotency", "event.data.order"}});
    CHECK(all.flow.rate_limit->period == std::chrono::hours(1));
    CHECK(all.flow.debounce->timeout == std::chrono::minutes(1));
    CHECK(all.flow.singleton->mode == cairn::Singleton::Mode::cancel);
    CHECK(all.flow.idempotency->window == std::chrono::hours(24));
    CHECK(one({{"batchEvents", {{"maxSize", 10}, {"timeout", "5s"}}}}).flow.batch->max_size == 10);
    CHECK(refusal(registration({function("b", {{"concurrency", "x"}})})).find("concurrency") !=
          std::string::npos);
    CHECK(refusal(registration({function("b", {{"rateLimit", {{"limit", 1}, {"period", "2d"}}}})}))
              .find("at most 24h") != std::string::npos);
    CHECK(refusal(registration({function("b", {{"singleton", {{"mode", "both"}}}})}))
              .find("\"mode\"") != std::string::npos);
    CHECK(refusal(registration({function("b", {{"throttle", {{"limit", 1}, {"period", "soon"}}}})}))
              .find("not a duration") != std::string::npos);
}

TEST_CASE("registrations: refused with a message naming the function and the field") {
    CHECK(refusal(json::array()).find("JSON object") != std::string::npos);
    json no_app = registration(json::array());
    no_app.erase("appName");
    CHECK(refusal(no_app).find("\"appName\" is required") != std::string::npos);
    CHECK(
        refusal(
            registration({function(
                "a", {{"triggers", {{{"event", "x"}, {"expression", "lowercase(event.name)"}}}}})}))
            .find("function 'shop-a': trigger expression: function 'lowercase' is not supported") !=
        std::string::npos);
    CHECK(refusal(registration({function("a", {{"triggers", {{{"cron", "61 * * * *"}}}}})}))
              .find("function 'shop-a'") != std::string::npos);
    CHECK(refusal(registration({function("a"), function("a")})).find("registered twice") !=
          std::string::npos);
    json bad_url = function("a");
    bad_url["steps"]["step"]["runtime"]["url"] = "ftp://x";
    CHECK(refusal(registration({bad_url})).find("http:// or https://") != std::string::npos);
    json bad_retries = function("a");
    bad_retries["steps"]["step"]["retries"] = {{"attempts", 99}};
    CHECK(refusal(registration({bad_retries})).find("retries.attempts") != std::string::npos);
    CHECK(refusal(
              registration({function("a", {{"cancel", {{{"event", "x"}, {"timeout", "soon"}}}}})}))
              .find("not a duration") != std::string::npos);
    CHECK(refusal(registration(
                      {function("a", {{"triggers", {{{"event", "x"}, {"cron", "* * * * *"}}}}})}))
              .find("either \"event\" or \"cron\"") != std::string::npos);
}
