#pragma once

#include <memory>

#include "plugins/plugin.hpp"

namespace cairn::examples {

// A minimal plugin, to copy when writing one (docs/plugins.md walks through it):
//
//   schema    component "example-notes": table example_notes
//   route     POST /api/example/notes {text}  (an admin API key) -> the note and the
//             `example/note` event commit together; GET /api/example/notes lists them
//   workflow  note-words on example/note: count the words, store the count
//
// Registered in `cairn` with --examples, beside the example workflows.
std::unique_ptr<plugins::Plugin> make_notes_plugin();

}  // namespace cairn::examples
