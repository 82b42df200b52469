#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plugins/ticket/model.hpp"

namespace cairn::ticket {

// One skill of the heuristic analyser's taxonomy: the canonical name, the words and
// phrases that point to it (lower-case), and what a moderator should check first.
struct Skill {
    std::string_view name;
    std::vector<std::string_view> synonyms;
    std::vector<std::string_view> checklist;
};
const std::vector<Skill>& skill_taxonomy();

// What an analyser reads of a ticket.
struct TicketText {
    std::string title;
    std::string description;
    std::vector<std::string> tags;
    std::optional<std::int64_t> deadline;  // epoch ms
    std::int64_t now_ms = 0;               // for deadline proximity
};

// Analyses a ticket. Implementations are thread-safe. analyse() throws on failure:
// std::runtime_error for transient problems (retried by the step), NonRetriableError
// for ones a retry cannot fix (a rejected API key), RetryAfterError for a 429.
class Analyzer {
  public:
    virtual ~Analyzer() = default;
    virtual std::string_view name() const = 0;
    virtual Analysis analyse(const TicketText& ticket) const = 0;
};

struct AnalyzerConfig {
    std::string kind = "heuristic";  // heuristic, gemini, openai
    std::string url;                 // API base URL (a default per provider when empty)
    std::string key;                 // API key, if the provider needs one
    std::string model;               // model name (a default per provider when empty)
    std::chrono::milliseconds timeout{30'000};
};

// Throws std::invalid_argument for an unknown kind.
std::unique_ptr<Analyzer> make_analyzer(const AnalyzerConfig& config);
std::unique_ptr<Analyzer> make_heuristic_analyzer();

// The instructions and ticket text sent to a language model, and the JSON shape asked back.
std::string analysis_prompt(const TicketText& ticket);

}  // namespace cairn::ticket
