#pragma once

#include "engine/engine.hpp"

namespace cairn::examples {

// Registers the example workflows (`cairn serve --examples`, `cairn worker --examples`):
//
//   hello  on "example/hello": five steps over data.name — greet, count, shout, reverse,
//          summary. data.work_ms (optional, 0..10000) makes each step busy for that long,
//          which crash tests use to keep runs in flight.
//   limited    on "example/limited": concurrency 2 per data.customer, one step busy for
//              data.work_ms. throttled on "example/throttled": at most 5 starts a second.
//   flaky  on "example/flaky": steps prepare and call-service; call-service fails for good
//          while the time is before data.fail_until_ms (epoch ms), then succeeds: a run
//          to watch fail and then retry.
void register_examples(engine::Engine& engine);

}  // namespace cairn::examples
