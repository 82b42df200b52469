#include "common/ids.hpp"

#include <fmt/format.h>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "common/time.hpp"

namespace cairn {
namespace {

// Random bits from the kernel's CSPRNG (getrandom), fetched 512 bytes at a time: an id's
// random part cannot be predicted from the ids seen before it.
class KernelRandom {
  public:
    std::uint64_t next() {
        if (used_ == pool_.size()) refill();
        std::uint64_t v = 0;
        std::memcpy(&v, pool_.data() + used_, sizeof v);
        used_ += sizeof v;
        return v;
    }

  private:
    void refill() {
        std::size_t got = 0;
        while (got < pool_.size()) {
            const ssize_t n = getrandom(pool_.data() + got, pool_.size() - got, 0);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw std::runtime_error(std::string("getrandom failed: ") + std::strerror(errno));
            }
            got += static_cast<std::size_t>(n);
        }
        used_ = 0;
    }
    std::array<unsigned char, 512> pool_{};
    std::size_t used_ = 512;
};

struct Generator {
    std::mutex mu;
    KernelRandom rng;           // guarded by mu
    std::int64_t last_ms = -1;  // guarded by mu
    std::uint16_t counter = 0;  // guarded by mu; 12 bits used
};

Generator& generator() {
    static Generator g;
    return g;
}

}  // namespace

std::string new_id() {
    return new_id_at(now_ms());
}

std::string id_floor(std::int64_t unix_ms) {
    const auto ms = static_cast<std::uint64_t>(std::max<std::int64_t>(unix_ms, 0));
    return fmt::format("{:08x}-{:04x}-", ms >> 16, ms & 0xffff);
}

std::string new_id_at(std::int64_t unix_ms) {
    Generator& g = generator();
    std::uint64_t ms = 0;
    std::uint16_t counter = 0;
    std::uint64_t tail = 0;
    {
        std::lock_guard lock(g.mu);
        if (unix_ms > g.last_ms) {
            g.last_ms = unix_ms;
            // Start low in the 12-bit space so a burst in one millisecond has room to count.
            g.counter = static_cast<std::uint16_t>(g.rng.next() & 0x3ff);
        } else if (++g.counter > 0xfff) {
            // Counter exhausted: borrow the next millisecond so ordering still holds.
            ++g.last_ms;
            g.counter = static_cast<std::uint16_t>(g.rng.next() & 0x3ff);
        }
        ms = static_cast<std::uint64_t>(g.last_ms);
        counter = g.counter;
        tail = g.rng.next();
    }

    std::array<std::uint8_t, 16> b{};
    for (int i = 0; i < 6; ++i) b[i] = static_cast<std::uint8_t>(ms >> (40 - 8 * i));
    b[6] = static_cast<std::uint8_t>(0x70 | ((counter >> 8) & 0x0f));
    b[7] = static_cast<std::uint8_t>(counter & 0xff);
    for (int i = 8; i < 16; ++i) b[i] = static_cast<std::uint8_t>(tail >> (8 * (i - 8)));
    b[8] = static_cast<std::uint8_t>(0x80 | (b[8] & 0x3f));

    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(36);
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
        out.push_back(kHex[b[i] >> 4]);
        out.push_back(kHex[b[i] & 0x0f]);
    }
    return out;
}

bool is_uuid(std::string_view text) {
    if (text.size() != 36) return false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

}  // namespace cairn
