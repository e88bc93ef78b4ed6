#include "plugin/test_seams.h"

#include <signal.h>

#include <atomic>
#include <fstream>
#include <memory>

namespace snapdedupe {

std::function<void()> TestSeams::before_dedupe() const
{
    if (pause_fifo.empty())
        return {};
    return [fifo = pause_fifo] {
        std::ifstream in(fifo);
        std::string line;
        std::getline(in, line);
    };
}

std::function<void()> TestSeams::after_dedupe_call() const
{
    if (kill_after_dedupe_calls == 0)
        return {};
    // Called from each deduping thread (FilesystemQueries::dedupe_threads).
    auto calls = std::make_shared<std::atomic<uint64_t>>(0);
    return [calls, limit = kill_after_dedupe_calls] {
        if (++*calls == limit)
            ::raise(SIGKILL);
    };
}

} // namespace snapdedupe
