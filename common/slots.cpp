#include "common/slots.hpp"

namespace cairn {

Slots::Hold& Slots::Hold::operator=(Hold&& other) noexcept {
    if (this != &other) {
        release();
        slots_ = other.slots_;
        key_ = std::move(other.key_);
        other.slots_ = nullptr;
    }
    return *this;
}

void Slots::Hold::release() {
    if (slots_ != nullptr) slots_->release(key_);
    slots_ = nullptr;
}

Slots::Hold Slots::acquire(const std::string& key) {
    std::lock_guard lock(mutex_);
    int& n = held_[key];
    if (n >= limit_) {
        if (n == 0) held_.erase(key);
        return {};
    }
    ++n;
    return {this, key};
}

int Slots::count(const std::string& key) {
    std::lock_guard lock(mutex_);
    const auto it = held_.find(key);
    return it == held_.end() ? 0 : it->second;
}

void Slots::release(const std::string& key) {
    std::lock_guard lock(mutex_);
    const auto it = held_.find(key);
    if (it != held_.end() && --it->second <= 0) held_.erase(it);
}

}  // namespace cairn
