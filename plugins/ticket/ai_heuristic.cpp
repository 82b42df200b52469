// The default analyser: offline, deterministic and fast. Skills come from the taxonomy by
// whole-word matches (title and tags weigh more than the description), priority from
// keyword rules and the deadline, helpful notes from the matched skills' checklists.

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "plugins/ticket/ai.hpp"

namespace cairn::ticket {
namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool word_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
}

// Occurrences of `phrase` in `text` that start and end at word boundaries.
int count_phrase(std::string_view text, std::string_view phrase) {
    int n = 0;
    for (std::size_t pos = text.find(phrase); pos != std::string_view::npos;
         pos = text.find(phrase, pos + 1)) {
        const bool start_ok = pos == 0 || !word_char(text[pos - 1]) || !word_char(phrase.front());
        const std::size_t end = pos + phrase.size();
        const bool end_ok =
            end >= text.size() || !word_char(text[end]) || !word_char(phrase.back());
        if (start_ok && end_ok) ++n;
    }
    return n;
}

struct Rule {
    std::string_view phrase;
    std::string_view reason;
};

constexpr std::array kHigh = {
    Rule{"outage", "an outage"},
    Rule{"is down", "a service down"},
    Rule{"went down", "a service down"},
    Rule{"site down", "a service down"},
    Rule{"down for everyone", "a service down"},
    Rule{"production", "production"},
    Rule{"prod", "production"},
    Rule{"data loss", "data loss"},
    Rule{"lost data", "data loss"},
    Rule{"lost all", "data loss"},
    Rule{"deleted all", "data loss"},
    Rule{"corrupt", "corruption"},
    Rule{"corrupted", "corruption"},
    Rule{"security", "security"},
    Rule{"breach", "a security breach"},
    Rule{"hacked", "a compromised account"},
    Rule{"vulnerability", "a vulnerability"},
    Rule{"exploit", "a vulnerability"},
    Rule{"leaked", "a leak"},
    Rule{"payment", "payments"},
    Rule{"charged twice", "a billing error"},
    Rule{"double charged", "a billing error"},
    Rule{"urgent", "urgency stated"},
    Rule{"asap", "urgency stated"},
    Rule{"critical", "urgency stated"},
    Rule{"emergency", "urgency stated"},
    Rule{"all users", "every user affected"},
    Rule{"everyone", "every user affected"},
    Rule{"crash", "crashes"},
    Rule{"crashes", "crashes"},
    Rule{"cannot log in", "users locked out"},
    Rule{"can't log in", "users locked out"},
    Rule{"locked out", "users locked out"},
};
constexpr std::array kMedium = {
    Rule{"error", "an error"},
    Rule{"bug", "a bug"},
    Rule{"broken", "something broken"},
    Rule{"fails", "a failure"},
    Rule{"failing", "a failure"},
    Rule{"failed", "a failure"},
    Rule{"not working", "something broken"},
    Rule{"slow", "slowness"},
    Rule{"timeout", "timeouts"},
};
constexpr std::array kLow = {
    Rule{"typo", "a typo"},
    Rule{"cosmetic", "a cosmetic issue"},
    Rule{"feature request", "a feature request"},
    Rule{"suggestion", "a suggestion"},
    Rule{"nice to have", "a nice-to-have"},
    Rule{"question", "a question"},
    Rule{"how do i", "a question"},
    Rule{"how to", "a question"},
    Rule{"minor", "a minor issue"},
    Rule{"wording", "wording"},
    Rule{"alignment", "a cosmetic issue"},
};

bool is_broad(std::string_view skill) {
    static constexpr std::string_view kBroad[] = {
        "frontend", "backend",    "database",   "api",           "sql",
        "testing",  "networking", "monitoring", "documentation", "customer support"};
    return std::find(std::begin(kBroad), std::end(kBroad), skill) != std::end(kBroad);
}

template <class Rules>
std::optional<std::string_view> first_rule(std::string_view text, const Rules& rules) {
    for (const auto& r : rules)
        if (count_phrase(text, r.phrase) > 0) return r.reason;
    return std::nullopt;
}

class HeuristicAnalyzer final : public Analyzer {
  public:
    std::string_view name() const override { return "heuristic"; }

    Analysis analyse(const TicketText& t) const override {
        const std::string title = lower(t.title);
        const std::string body = lower(t.description);
        const std::string all = title + "\n" + body;

        // ---- skills ----
        const auto& taxonomy = skill_taxonomy();
        // Each tag as a skill name and in lower case, once: they are compared with every
        // name and synonym of the taxonomy.
        std::vector<std::pair<std::string, std::string>> tags;  // (normalized, lower case)
        for (const auto& tag : t.tags) tags.emplace_back(normalize_skill(tag), lower(tag));
        std::vector<std::pair<int, std::size_t>> scored;  // (score, taxonomy index)
        for (std::size_t i = 0; i < taxonomy.size(); ++i) {
            const Skill& skill = taxonomy[i];
            int score = 0;
            auto add = [&](std::string_view phrase) {
                score += 2 * count_phrase(title, phrase) + count_phrase(body, phrase);
                for (const auto& [normalized, lowered] : tags)
                    if (normalized == skill.name || lowered == phrase) score += 3;
            };
            // Two-letter names ("go", "ai") are ordinary words; only their synonyms count.
            if (skill.name.size() > 2) add(skill.name);
            for (auto syn : skill.synonyms) add(syn);
            // Broad areas count half, so a specific skill outranks them on equal evidence.
            if (score > 0) scored.emplace_back(is_broad(skill.name) ? score : 2 * score, i);
        }
        std::stable_sort(scored.begin(), scored.end(),
                         [](const auto& a, const auto& b) { return a.first > b.first; });
        Analysis a;
        for (std::size_t k = 0; k < scored.size() && k < 5; ++k)
            a.related_skills.emplace_back(taxonomy[scored[k].second].name);

        // ---- priority ----
        std::vector<std::string> reasons;
        a.priority = "medium";
        if (auto r = first_rule(all, kHigh)) {
            a.priority = "high";
            reasons.push_back(fmt::format("mentions {}", *r));
        }
        if (t.deadline) {
            const double hours = static_cast<double>(*t.deadline - t.now_ms) / 3'600'000.0;
            if (hours <= 24) {
                a.priority = "high";
                reasons.push_back(hours < 0 ? "the deadline has passed"
                                            : fmt::format("deadline in {:.0f} h", hours));
            } else if (hours <= 72) {
                reasons.push_back(fmt::format("deadline in {:.0f} h", hours));
            }
        }
        if (a.priority == "medium" && reasons.empty()) {
            const auto medium = first_rule(all, kMedium);
            const auto low = first_rule(all, kLow);
            if (low && !medium) {
                a.priority = "low";
                reasons.push_back(fmt::format("looks like {}", *low));
            } else if (medium) {
                reasons.push_back(fmt::format("reports {}", *medium));
            } else {
                reasons.push_back("no urgency signals");
            }
        }

        // ---- notes and summary ----
        std::string notes = fmt::format("Priority {}: {}.", a.priority, fmt::join(reasons, "; "));
        if (a.related_skills.empty()) {
            notes +=
                "\nNo known skill matched; ask the reporter for the product area, steps to "
                "reproduce and what they expected.";
        } else {
            notes += fmt::format("\nRelated skills: {}.", fmt::join(a.related_skills, ", "));
            for (std::size_t k = 0; k < scored.size() && k < 5; ++k) {
                const Skill& skill = taxonomy[scored[k].second];
                for (auto item : skill.checklist)
                    notes += fmt::format("\n- {}: {}", skill.name, item);
            }
        }
        a.helpful_notes = notes;
        std::string head = trim(t.title);
        if (head.size() > 120) head = head.substr(0, 117) + "...";
        a.summary = a.related_skills.empty() ? fmt::format("{} priority: {}", a.priority, head)
                                             : fmt::format("{} priority {} issue: {}", a.priority,
                                                           a.related_skills.front(), head);
        a.summary[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(a.summary[0])));
        return a;
    }
};

}  // namespace

std::unique_ptr<Analyzer> make_heuristic_analyzer() {
    return std::make_unique<HeuristicAnalyzer>();
}

}  // namespace cairn::ticket
