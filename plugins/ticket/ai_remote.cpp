// Language-model analysers: Gemini's generateContent API and any OpenAI-compatible
// chat-completions server. Both ask for JSON, validate the answer field by field, and
// classify failures for the step's retry policy.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "cairn/errors.hpp"
#include "common/json.hpp"
#include "common/time.hpp"
#include "plugins/ticket/ai.hpp"
#include "plugins/ticket/http_client.hpp"

namespace cairn::ticket {
namespace {

// The longest wait a provider's Retry-After may ask of a step, in seconds.
constexpr std::int64_t kMaxRetryAfterS = 300;

constexpr std::string_view kInstructions =
    "You triage support tickets for a help desk. Read the ticket and answer with one JSON "
    "object with exactly these fields: \"priority\" (\"low\", \"medium\" or \"high\"; high for "
    "outages, security problems, data loss, payment failures or a deadline within a day), "
    "\"helpful_notes\" (concise, practical notes for the moderator who will handle it: likely "
    "causes, what to check first, useful references), \"related_skills\" (an array of 1 to 5 "
    "short lower-case technical skill names needed to solve it, e.g. \"react\", "
    "\"postgresql\", \"networking\") and \"summary\" (one line of at most 120 characters). "
    "Answer with the JSON object only.";

std::string strip_fences(std::string text) {
    // Some local models wrap JSON in Markdown fences even when asked not to.
    const auto open = text.find("```");
    if (open == std::string::npos) return text;
    auto start = text.find('\n', open);
    const auto close = text.rfind("```");
    if (start == std::string::npos || close <= start) return text;
    return text.substr(start + 1, close - start - 1);
}

Analysis parse_answer(const std::string& provider, const std::string& text) {
    std::string problem;
    const json j = parse_untrusted_json(strip_fences(text), problem);
    if (j.is_discarded())
        throw std::runtime_error(fmt::format("{}: the model's answer: {}", provider, problem));
    try {
        return validate_analysis(j);
    } catch (const std::runtime_error& e) {
        throw std::runtime_error(fmt::format("{}: {}", provider, e.what()));
    }
}

// Maps a non-200 reply to the error the retry policy understands.
[[noreturn]] void fail(const std::string& provider, const HttpReply& reply) {
    std::string detail = reply.body.substr(0, 300);
    std::string problem;
    const json j = parse_untrusted_json(reply.body, problem);
    if (j.is_object() && j.contains("error")) {
        const json& e = j["error"];
        if (e.is_object() && e.contains("message") && e["message"].is_string())
            detail = e["message"].get<std::string>();
        else if (e.is_string())
            detail = e.get<std::string>();
    }
    const std::string message = fmt::format("{}: HTTP {}: {}", provider, reply.status, detail);
    if (reply.status == 429) {
        // The provider's wait, within bounds: a huge Retry-After must not park the run.
        const auto wait =
            std::clamp<std::int64_t>(reply.retry_after_s.value_or(5), 1, kMaxRetryAfterS);
        throw RetryAfterError(message, std::chrono::seconds(wait));
    }
    if (reply.status == 408 || reply.status >= 500) throw std::runtime_error(message);
    // 400, 401, 403, 404: a wrong key, model or URL; retrying cannot help.
    throw NonRetriableError(message);
}

json parse_reply(const std::string& provider, const HttpReply& reply) {
    if (reply.status != 200) fail(provider, reply);
    std::string problem;
    json j = parse_untrusted_json(reply.body, problem);
    if (j.is_discarded())
        throw std::runtime_error(fmt::format("{}: the reply: {}", provider, problem));
    return j;
}

std::string base_url(std::string url) {
    while (!url.empty() && url.back() == '/') url.pop_back();
    return url;
}

class GeminiAnalyzer final : public Analyzer {
  public:
    explicit GeminiAnalyzer(AnalyzerConfig c) : c_(std::move(c)) {
        if (c_.url.empty()) c_.url = "https://generativelanguage.googleapis.com";
        if (c_.model.empty()) c_.model = "gemini-2.5-flash";
        c_.url = base_url(c_.url);
    }
    std::string_view name() const override { return "gemini"; }

    Analysis analyse(const TicketText& ticket) const override {
        const json schema = {
            {"type", "OBJECT"},
            {"properties",
             {{"priority", {{"type", "STRING"}, {"enum", {"low", "medium", "high"}}}},
              {"helpful_notes", {{"type", "STRING"}}},
              {"related_skills", {{"type", "ARRAY"}, {"items", {{"type", "STRING"}}}}},
              {"summary", {{"type", "STRING"}}}}},
            {"required", {"priority", "helpful_notes", "related_skills", "summary"}}};
        const json request = {
            {"systemInstruction", {{"parts", {{{"text", kInstructions}}}}}},
            {"contents", {{{"role", "user"}, {"parts", {{{"text", analysis_prompt(ticket)}}}}}}},
            {"generationConfig",
             {{"responseMimeType", "application/json"},
              {"responseSchema", schema},
              {"temperature", 0}}}};
        std::vector<std::pair<std::string, std::string>> headers;
        if (!c_.key.empty()) headers.emplace_back("x-goog-api-key", c_.key);
        const auto url = fmt::format("{}/v1beta/models/{}:generateContent", c_.url, c_.model);
        const json j = parse_reply("gemini", post_json(url, headers, request.dump(), c_.timeout));
        const json* text = nullptr;
        if (j.contains("candidates") && j["candidates"].is_array() && !j["candidates"].empty()) {
            const json& cand = j["candidates"][0];
            if (cand.contains("content") && cand["content"].contains("parts") &&
                cand["content"]["parts"].is_array() && !cand["content"]["parts"].empty() &&
                cand["content"]["parts"][0].contains("text"))
                text = &cand["content"]["parts"][0]["text"];
        }
        if (text == nullptr || !text->is_string()) {
            std::string why = "no candidate text in the reply";
            if (j.contains("promptFeedback") && j["promptFeedback"].contains("blockReason"))
                why = "the prompt was blocked: " + j["promptFeedback"]["blockReason"].dump();
            throw std::runtime_error("gemini: " + why);
        }
        return parse_answer("gemini", text->get<std::string>());
    }

  private:
    AnalyzerConfig c_;
};

class OpenAiAnalyzer final : public Analyzer {
  public:
    explicit OpenAiAnalyzer(AnalyzerConfig c) : c_(std::move(c)) {
        if (c_.url.empty()) c_.url = "http://127.0.0.1:11434";  // Ollama's default
        if (c_.model.empty()) c_.model = "llama3.2";
        c_.url = base_url(c_.url);
        // Accept a base URL (http://host:port), one ending in /v1, or the full endpoint.
        if (!c_.url.ends_with("/chat/completions")) {
            if (!c_.url.ends_with("/v1")) c_.url += "/v1";
            c_.url += "/chat/completions";
        }
    }
    std::string_view name() const override { return "openai"; }

    Analysis analyse(const TicketText& ticket) const override {
        const json request = {{"model", c_.model},
                              {"messages",
                               {{{"role", "system"}, {"content", kInstructions}},
                                {{"role", "user"}, {"content", analysis_prompt(ticket)}}}},
                              {"temperature", 0},
                              {"response_format", {{"type", "json_object"}}}};
        std::vector<std::pair<std::string, std::string>> headers;
        if (!c_.key.empty()) headers.emplace_back("Authorization", "Bearer " + c_.key);
        const json j =
            parse_reply("openai", post_json(c_.url, headers, request.dump(), c_.timeout));
        if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty() ||
            !j["choices"][0].contains("message") ||
            !j["choices"][0]["message"].contains("content") ||
            !j["choices"][0]["message"]["content"].is_string()) {
            throw std::runtime_error("openai: no message content in the reply");
        }
        return parse_answer("openai", j["choices"][0]["message"]["content"].get<std::string>());
    }

  private:
    AnalyzerConfig c_;
};

}  // namespace

std::string analysis_prompt(const TicketText& t) {
    std::string deadline = "none";
    if (t.deadline) deadline = format_rfc3339(*t.deadline);
    return fmt::format("Ticket title: {}\nTags: {}\nDeadline: {} (now: {})\nDescription:\n{}",
                       t.title, fmt::join(t.tags, ", "), deadline, format_rfc3339(t.now_ms),
                       t.description);
}

std::unique_ptr<Analyzer> make_analyzer(const AnalyzerConfig& config) {
    if (config.kind == "heuristic") return make_heuristic_analyzer();
    if (config.kind == "gemini") {
        init_curl();
        return std::make_unique<GeminiAnalyzer>(config);
    }
    if (config.kind == "openai") {
        init_curl();
        return std::make_unique<OpenAiAnalyzer>(config);
    }
    throw std::invalid_argument(
        fmt::format("CAIRN_AI '{}' is not one of heuristic, gemini, openai", config.kind));
}

}  // namespace cairn::ticket
