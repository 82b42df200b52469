#pragma once

// Cairn's public API (docs/library.md): everything a program embedding Cairn includes.

#include "cairn/context.hpp"
#include "cairn/engine.hpp"
#include "cairn/errors.hpp"
#include "cairn/event.hpp"
#include "cairn/server.hpp"
#include "cairn/version.hpp"
#include "cairn/workflow.hpp"
