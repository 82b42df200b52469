// main() for every doctest binary: refuses (in CI) or skips (elsewhere) a Postgres run
// that has no server configured, then runs the cases.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "support/test_db.hpp"

int main(int argc, char** argv) {
    if (int code = cairn::testing::check_backend_available(); code >= 0) return code;
    doctest::Context context(argc, argv);
    return context.run();
}
